package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/netlab"
	"github.com/tungate/tungate/tun/autoroute"
)

// The auto-route tests run the gateway in a client namespace whose default
// route is its veth, as on a normal machine, and let `--auto-route` do the
// capture: no hand-made rules.

// gwProc is one `gateway run` process in a lab's client namespace.
type gwProc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error // receives Wait's result once
	err  error
	exit bool
}

// autoRouteLab is a lab with a default route via the veth, and the routing
// state of its client namespace before any gateway ran.
func autoRouteLab(t *testing.T) (*netlab.Lab, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, a TUN device and policy routes")
	}
	lab, err := netlab.New(netlab.Options{DefaultRoute: true})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	return lab, snapshot(t, lab)
}

func snapshot(t *testing.T, lab *netlab.Lab) string {
	t.Helper()
	s, err := lab.Client().RoutingSnapshot()
	if err != nil {
		t.Fatalf("routing snapshot: %v", err)
	}
	return s
}

// startAutoRoute starts `gateway run --auto-route` with args (and TUNGATE_
// variables in env) and waits until it says it is up, after installing its
// capture; the last rule of its block must then exist.
func startAutoRoute(t *testing.T, lab *netlab.Lab, env []string, args ...string) *gwProc {
	t.Helper()
	p := runGateway(t, lab, env, append([]string{"--auto-route"}, args...)...)
	cfg := config.Default()
	prio := cfg.TUN.RulePriority
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "TUNGATE_TUN_RULE_PRIORITY="); ok {
			fmt.Sscan(v, &prio)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.out.String(), `msg="gateway up"`) {
		if p.exited() || time.Now().After(deadline) {
			p.kill()
			t.Fatalf("gateway did not come up (exited %v: %v)\n%s", p.exit, p.err, p.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !p.hasRule(t, lab, prio+autoroute.BlockSize-1) {
		t.Fatalf("gateway is up without the rules of its block at %d\n%s", prio, snapshot(t, lab))
	}
	return p
}

// runGateway starts `gateway run` in C and returns at once.
func runGateway(t *testing.T, lab *netlab.Lab, env []string, args ...string) *gwProc {
	t.Helper()
	p := &gwProc{out: new(lockedBuffer), done: make(chan error, 1)}
	base := []string{"run", "--connect-timeout", connectTimeout.String(), "--log-level", "debug"}
	p.cmd = lab.Client().Command(context.Background(), gatewayBin, append(base, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(cleanEnv(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("gateway %v output:\n%s", args, tail(p.out.String(), 60))
		}
	})
	return p
}

func (p *gwProc) hasRule(t *testing.T, lab *netlab.Lab, prio int) bool {
	t.Helper()
	for _, fam := range []string{"-6", "-4"} {
		out, err := lab.Client().Command(context.Background(), "ip", fam, "rule", "show", "priority", fmt.Sprint(prio)).CombinedOutput()
		if err == nil && strings.Contains(string(out), "proto 116") {
			return true
		}
	}
	return false
}

func (p *gwProc) exited() bool {
	if p.exit {
		return true
	}
	select {
	case p.err = <-p.done:
		p.exit = true
	default:
	}
	return p.exit
}

// wait waits for the process to exit, at most d.
func (p *gwProc) wait(d time.Duration) error {
	if p.exit {
		return p.err
	}
	select {
	case p.err = <-p.done:
		p.exit = true
		return p.err
	case <-time.After(d):
		return fmt.Errorf("gateway still running after %v", d)
	}
}

// term sends SIGTERM and expects a clean exit.
func (p *gwProc) term(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(15 * time.Second); err != nil {
		t.Fatalf("gateway after SIGTERM: %v\n%s", err, tail(p.out.String(), 40))
	}
}

// kill ends the process at once, as a crash would.
func (p *gwProc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.wait(10 * time.Second)
}

// exitCode is the process's exit status once it has exited.
func (p *gwProc) exitCode() int {
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err == nil {
		return 0
	}
	return -1
}

// listenEcho serves TCP echo (one line back) on addr in S.
func listenEcho(t *testing.T, lab *netlab.Lab, addr string) string {
	t.Helper()
	e := &env{lab: lab}
	return e.listen(t, addr, func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
}

// echoUDP serves UDP echo on addr in S.
func echoUDP(t *testing.T, lab *netlab.Lab, addr string) string {
	t.Helper()
	srv, err := lab.Server().ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(buf[:n], from)
		}
	}()
	return srv.LocalAddr().String()
}

// roundTrip writes a line on c and expects it back; it returns the local
// address c used, which tells whether the kernel routed it into the TUN.
func roundTrip(t *testing.T, c net.Conn, network string) netip.Addr {
	t.Helper()
	defer c.Close()
	msg := []byte("hello via " + c.RemoteAddr().String())
	if network == "udp" {
		if err := udpRoundTrip(c, msg); err != nil {
			t.Errorf("udp to %s: %v", c.RemoteAddr(), err)
		}
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Errorf("write to %s: %v", c.RemoteAddr(), err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
			t.Errorf("echo from %s: %q, %v", c.RemoteAddr(), buf, err)
		}
	}
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	return ap.Addr().Unmap()
}

var (
	vethAddr4 = netip.MustParseAddr(netlab.ClientVethAddr4)
	vethAddr6 = netip.MustParseAddr(netlab.ClientVethAddr6)
)

func hostPort(host string, port string) string { return net.JoinHostPort(host, port) }

// TestAutoRoute_CapturesTCPAndUDP: with --auto-route alone, the client's
// kernel TCP and UDP to a server, IPv4 and IPv6, leave through the TUN
// (their source is the TUN's address) and work; both stacks.
func TestAutoRoute_CapturesTCPAndUDP(t *testing.T) {
	for _, kind := range []string{"custom", "gvisor"} {
		t.Run(kind, func(t *testing.T) {
			lab, _ := autoRouteLab(t)
			p := startAutoRoute(t, lab, nil, "--stack", kind)
			for _, c := range []struct {
				network, host string
				want          netip.Addr
			}{
				{"tcp", netlab.ServerAddr4, tunAddr4},
				{"tcp", netlab.ServerAddr6, tunAddr6},
				{"udp", netlab.ServerAddr4, tunAddr4},
				{"udp", netlab.ServerAddr6, tunAddr6},
			} {
				var addr string
				if c.network == "tcp" {
					addr = listenEcho(t, lab, hostPort(c.host, "0"))
				} else {
					addr = echoUDP(t, lab, hostPort(c.host, "0"))
				}
				conn, err := lab.Client().DialContext(t.Context(), c.network, addr)
				if err != nil {
					t.Errorf("%s %s: %v", c.network, addr, err)
					continue
				}
				if got := roundTrip(t, conn, c.network); got != c.want {
					t.Errorf("%s %s left from %s, want the TUN's %s", c.network, addr, got, c.want)
				}
			}
			p.term(t)
			logs := p.out.String()
			if n := statCounter(t, logs, "TCPAccepted"); n < 2 && kind == "custom" {
				t.Errorf("the gateway accepted %d TCP flows, want 2", n)
			}
			if !strings.Contains(logs, "auto-route: removed") {
				t.Errorf("no removal logged:\n%s", tail(logs, 20))
			}
		})
	}
}

// TestAutoRoute_ExcludedPrefixAndUIDBypass: a tun.route_exclude prefix and
// an excluded uid leave by the veth, everything else through the TUN.
func TestAutoRoute_ExcludedPrefixAndUIDBypass(t *testing.T) {
	lab, _ := autoRouteLab(t)
	const excludedUID, otherUID = 4242, 4243
	p := startAutoRoute(t, lab, nil,
		"--route-exclude", netlab.AltServerAddr4+"/32,"+netlab.AltServerAddr6+"/128",
		"--exclude-uid", fmt.Sprint(excludedUID))
	defer p.term(t)
	for _, c := range []struct {
		name string
		host string
		uid  int // -1: the test's own (root)
		want netip.Addr
	}{
		{"excluded prefix v4", netlab.AltServerAddr4, -1, vethAddr4},
		{"excluded prefix v6", netlab.AltServerAddr6, -1, vethAddr6},
		{"captured v4", netlab.ServerAddr4, -1, tunAddr4},
		{"excluded uid v4", netlab.ServerAddr4, excludedUID, vethAddr4},
		{"excluded uid v6", netlab.ServerAddr6, excludedUID, vethAddr6},
		{"other uid v4", netlab.ServerAddr4, otherUID, tunAddr4},
	} {
		addr := listenEcho(t, lab, hostPort(c.host, "0"))
		var conn net.Conn
		var err error
		if c.uid < 0 {
			conn, err = lab.Client().DialContext(t.Context(), "tcp", addr)
		} else {
			conn, err = lab.Client().DialAsUID(t.Context(), uint32(c.uid), "tcp", addr)
		}
		if err != nil {
			t.Errorf("%s: dial %s: %v", c.name, addr, err)
			continue
		}
		if got := roundTrip(t, conn, "tcp"); got != c.want {
			t.Errorf("%s: left from %s, want %s", c.name, got, c.want)
		}
	}
}

// TestAutoRoute_InboundConnectionsStillWork: a connection that comes in
// over the veth (ssh to the machine, a forwarded port) is answered from the
// veth's address, and its replies are not captured into the TUN.
func TestAutoRoute_InboundConnectionsStillWork(t *testing.T) {
	lab, _ := autoRouteLab(t)
	p := startAutoRoute(t, lab, nil)
	defer p.term(t)
	for _, host := range []string{netlab.ClientVethAddr4, netlab.ClientVethAddr6} {
		ln, err := lab.Client().Listen("tcp", hostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := lab.Server().DialContext(ctx, "tcp", ln.Addr().String())
		cancel()
		if err != nil {
			t.Errorf("inbound connection to %s: %v", ln.Addr(), err)
			continue
		}
		roundTrip(t, conn, "tcp")
	}
}

// TestAutoRoute_StrictSendsDNSToExcludedServerIntoTUN: with strict_route,
// DNS to an excluded address still goes into the TUN, other traffic to it
// does not.
func TestAutoRoute_StrictSendsDNSToExcludedServerIntoTUN(t *testing.T) {
	lab, _ := autoRouteLab(t)
	p := startAutoRoute(t, lab, nil, "--strict-route", "--route-exclude", netlab.AltServerAddr4+"/32")
	defer p.term(t)
	dns := echoUDP(t, lab, hostPort(netlab.AltServerAddr4, "53"))
	conn, err := lab.Client().DialContext(t.Context(), "udp", dns)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, conn, "udp"); got != tunAddr4 {
		t.Errorf("DNS to the excluded %s left from %s, want the TUN's %s", dns, got, tunAddr4)
	}
	other := echoUDP(t, lab, hostPort(netlab.AltServerAddr4, "0"))
	conn, err = lab.Client().DialContext(t.Context(), "udp", other)
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, conn, "udp"); got != vethAddr4 {
		t.Errorf("non-DNS to the excluded %s left from %s, want the veth's %s", other, got, vethAddr4)
	}
}

// TestAutoRoute_SIGTERMRestoresRouting: after a clean shutdown, ip rule,
// ip -6 rule and every table are exactly as before the start.
func TestAutoRoute_SIGTERMRestoresRouting(t *testing.T) {
	lab, before := autoRouteLab(t)
	p := startAutoRoute(t, lab, nil, "--strict-route", "--exclude-uid", "1000-1999")
	if during := snapshot(t, lab); during == before || !strings.Contains(during, "proto 116") {
		t.Fatalf("no auto-route state while running:\n%s", during)
	}
	p.term(t)
	if after := snapshot(t, lab); after != before {
		t.Errorf("routing after SIGTERM differs:\n%s", diffLines(before, after))
	}
}

// TestAutoRoute_SIGKILLThenRestartCleansUp: a killed gateway leaves its
// rules; the next run removes them before installing its own, works, and
// after SIGTERM the state is as before the first start. `gateway cleanup`
// after a second kill removes them as well.
func TestAutoRoute_SIGKILLThenRestartCleansUp(t *testing.T) {
	lab, before := autoRouteLab(t)
	p := startAutoRoute(t, lab, nil, "--strict-route")
	p.kill()
	stale := snapshot(t, lab)
	if !strings.Contains(stale, "proto 116") {
		t.Fatalf("a killed gateway left nothing behind (nothing to test):\n%s", stale)
	}
	if strings.Contains(stale, tunName) {
		t.Fatalf("the TUN outlived a SIGKILL:\n%s", stale)
	}

	p = startAutoRoute(t, lab, nil, "--strict-route")
	if !strings.Contains(p.out.String(), "removed the rules and routes an earlier run left behind") {
		t.Errorf("the restart did not report the stale state it removed:\n%s", tail(p.out.String(), 20))
	}
	addr := listenEcho(t, lab, hostPort(netlab.ServerAddr4, "0"))
	conn, err := lab.Client().DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial after restart: %v", err)
	}
	if got := roundTrip(t, conn, "tcp"); got != tunAddr4 {
		t.Errorf("after restart: left from %s, want the TUN's", got)
	}
	p.term(t)
	if after := snapshot(t, lab); after != before {
		t.Errorf("routing after SIGKILL, restart, SIGTERM differs:\n%s", diffLines(before, after))
	}

	p = startAutoRoute(t, lab, nil)
	p.kill()
	out, err := lab.Client().Command(context.Background(), gatewayBin, "cleanup").CombinedOutput()
	if err != nil {
		t.Fatalf("gateway cleanup: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "removed ") {
		t.Errorf("gateway cleanup said %q", out)
	}
	if after := snapshot(t, lab); after != before {
		t.Errorf("routing after SIGKILL and gateway cleanup differs:\n%s", diffLines(before, after))
	}
}

// TestAutoRoute_ErrorAfterSetupRemovesEverything: a failure after the
// capture is installed (here the --pcap file cannot be created) ends the
// run with the routing as before.
func TestAutoRoute_ErrorAfterSetupRemovesEverything(t *testing.T) {
	lab, before := autoRouteLab(t)
	p := runGateway(t, lab, nil, "--auto-route", "--pcap", "/nonexistent-dir/capture.pcap")
	if err := p.wait(20 * time.Second); p.exitCode() != 1 {
		t.Fatalf("gateway exit %d (%v), want 1\n%s", p.exitCode(), err, p.out)
	}
	if !strings.Contains(p.out.String(), "auto-route: installed") {
		t.Fatalf("the run failed before installing the capture; nothing tested:\n%s", p.out)
	}
	if after := snapshot(t, lab); after != before {
		t.Errorf("routing after a failed run differs:\n%s", diffLines(before, after))
	}
}

// TestAutoRoute_CleanupLeavesARunningGatewayAlone: `gateway cleanup` for
// the table of a running gateway refuses and removes nothing.
func TestAutoRoute_CleanupLeavesARunningGatewayAlone(t *testing.T) {
	lab, _ := autoRouteLab(t)
	p := startAutoRoute(t, lab, nil)
	defer p.term(t)
	during := snapshot(t, lab)
	out, err := lab.Client().Command(context.Background(), gatewayBin, "cleanup").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "in use by a running gateway") {
		t.Errorf("gateway cleanup beside a running gateway: %v, %q; want exit 1, in use", err, out)
	}
	if after := snapshot(t, lab); after != during {
		t.Errorf("cleanup changed a running gateway's routing:\n%s", diffLines(during, after))
	}
}

// TestAutoRoute_TwoGatewaysSideBySide: two gateways with their own TUN,
// table and priorities; stopping one leaves the other's capture intact.
func TestAutoRoute_TwoGatewaysSideBySide(t *testing.T) {
	lab, before := autoRouteLab(t)
	// A captures the server address only, B everything else, in front.
	a := startAutoRoute(t, lab, []string{"TUNGATE_TUN_ROUTE_TABLE=3001", "TUNGATE_TUN_RULE_PRIORITY=8000"},
		"--tun-name", "tga0", "--route-include", netlab.ServerAddr4+"/32")
	b := startAutoRoute(t, lab, []string{"TUNGATE_TUN_ROUTE_TABLE=3002", "TUNGATE_TUN_RULE_PRIORITY=8100"},
		"--tun-name", "tgb0", "--tun-address", "198.18.200.1/24,2001:2:0:2::1/64",
		"--route-include", netlab.AltServerAddr4+"/32")
	check := func(host string, want netip.Addr) {
		t.Helper()
		addr := listenEcho(t, lab, hostPort(host, "0"))
		conn, err := lab.Client().DialContext(t.Context(), "tcp", addr)
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			return
		}
		if got := roundTrip(t, conn, "tcp"); got != want {
			t.Errorf("%s left from %s, want %s", addr, got, want)
		}
	}
	bAddr := netip.MustParseAddr("198.18.200.1")
	check(netlab.ServerAddr4, tunAddr4)
	check(netlab.AltServerAddr4, bAddr)
	a.term(t)
	check(netlab.ServerAddr4, vethAddr4)
	check(netlab.AltServerAddr4, bAddr)
	b.term(t)
	if after := snapshot(t, lab); after != before {
		t.Errorf("routing after both stopped differs:\n%s", diffLines(before, after))
	}
}

// TestAutoRoute_ConflictingRuleIsAConfigError: a rule tungate did not add
// in its priority block stops the start with exit 2 and one line naming
// tun.rule_priority, and nothing is installed.
func TestAutoRoute_ConflictingRuleIsAConfigError(t *testing.T) {
	lab, _ := autoRouteLab(t)
	out, err := lab.Client().Command(context.Background(), "ip", "rule", "add", "priority", "7404", "lookup", "main").CombinedOutput()
	if err != nil {
		t.Fatalf("ip rule add: %v\n%s", err, out)
	}
	before := snapshot(t, lab)
	p := runGateway(t, lab, nil, "--auto-route")
	if err := p.wait(20 * time.Second); p.exitCode() != 2 {
		t.Fatalf("gateway exit %d (%v), want 2\n%s", p.exitCode(), err, p.out)
	}
	var lines []string
	for line := range strings.SplitSeq(p.out.String(), "\n") {
		if strings.HasPrefix(line, "gateway: ") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "tun.rule_priority") {
		t.Errorf("error lines %q, want one naming tun.rule_priority", lines)
	}
	if after := snapshot(t, lab); after != before {
		t.Errorf("a refused start changed the routing:\n%s", diffLines(before, after))
	}
}

// diffLines lists the lines only one of a and b has.
func diffLines(a, b string) string {
	count := map[string]int{}
	for l := range strings.SplitSeq(a, "\n") {
		count[l]++
	}
	for l := range strings.SplitSeq(b, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		switch {
		case n > 0:
			out = append(out, "- "+l)
		case n < 0:
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
