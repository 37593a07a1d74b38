package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/netlab"
)

// The DNS tests run real components in S: dnsmasq (the resolver the
// gateway forwards to, and microsocks's) and microsocks (a SOCKS5 proxy
// that resolves names itself). C's resolv.conf names an address where no
// DNS server listens: every lookup works only because the gateway hijacks
// port 53.

const (
	deadResolver = "198.18.0.53" // in the TUN's prefix; nothing listens there
	socksPort    = "1080"
)

// needTool returns the path of a program the test runs, skipping when it
// is missing, except in CI, whose .ci/run installs it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing: .ci/run must install Debian's %s", name, pkg)
	}
	t.Skipf("needs %s (Debian's %s)", name, pkg)
	return ""
}

// resolvConf gives the namespace its own /etc/resolv.conf, which `ip
// netns exec` bind-mounts for the programs it starts.
func resolvConf(t *testing.T, ns *netlab.NS, nameserver string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver "+nameserver+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startDaemon runs a program in ns until the test ends.
func startDaemon(t *testing.T, ns *netlab.NS, out *lockedBuffer, name string, args ...string) {
	t.Helper()
	cmd := ns.Command(context.Background(), name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, killed whole: a daemon that forks workers
	// (danted) would otherwise leave them holding the output pipe.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
}

// waitListening polls until addr accepts TCP connections from ns.
func waitListening(t *testing.T, ns *netlab.NS, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		c, err := ns.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dnsLab is a lab with dnsmasq, microsocks and a web server in S that
// answers with the client address it sees.
type dnsLab struct {
	lab     *netlab.Lab
	dnsmasq *lockedBuffer
}

func newDNSLab(t *testing.T) *dnsLab {
	t.Helper()
	dnsmasq := needTool(t, "dnsmasq", "dnsmasq-base")
	microsocks := needTool(t, "microsocks", "microsocks")
	needTool(t, "curl", "curl")
	lab, _ := autoRouteLab(t)
	d := &dnsLab{lab: lab, dnsmasq: new(lockedBuffer)}
	s := lab.Server()
	resolvConf(t, s, netlab.ServerAddr4)
	resolvConf(t, lab.Client(), deadResolver)
	startDaemon(t, s, d.dnsmasq, dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--log-queries", "--log-facility=-", "--pid-file=", "--user=root",
		"--listen-address="+netlab.ServerAddr4, "--bind-interfaces",
		"--address=/test/"+netlab.ServerAddr4, "--address=/example/"+netlab.ServerAddr4)
	startDaemon(t, s, new(lockedBuffer), microsocks, "-i", netlab.AltServerAddr4, "-p", socksPort)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "seen from %s\n", host)
	})}
	ln, err := s.Listen("tcp", netlab.ServerAddr4+":80")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	waitListening(t, lab.Client(), netlab.AltServerAddr4+":"+socksPort)
	waitListening(t, lab.Client(), netlab.ServerAddr4+":53") // dnsmasq serves TCP too
	return d
}

// curl fetches url from C with the system's resolver (resolv.conf), and
// returns the body and the address it connected to.
func (d *dnsLab) curl(t *testing.T, url string) (body, remote string, err error) {
	t.Helper()
	out, err := d.lab.Client().Command(context.Background(), "curl", "-sS", "--max-time", "5",
		"-w", "\nremote=%{remote_ip}", url).CombinedOutput()
	body, remote, _ = strings.Cut(string(out), "\nremote=")
	return strings.TrimSpace(body), strings.TrimSpace(remote), err
}

// vpnExample is the example of configs/: the test runs it as users would,
// with the cache file moved into the test's directory.
const vpnExample = "../../configs/vpn.yaml"

// TestDNS_FakeIPRulesAndSOCKS5WithRemoteResolution is the VPN mode end to
// end: auto_route captures, dns.hijack answers the lookups the client
// sends to a dead resolver, a domain_suffix rule sends *.example through
// SOCKS5 with the name (resolved by the proxy), a reject rule refuses at
// once, the rest goes direct, and a name keeps its fake address across a
// restart.
func TestDNS_FakeIPRulesAndSOCKS5WithRemoteResolution(t *testing.T) {
	d := newDNSLab(t)
	env := []string{"TUNGATE_DNS_CACHE_FILE=" + filepath.Join(t.TempDir(), "dns.db")}
	p := startAutoRoute(t, d.lab, env, "--config", vpnExample)

	body, fake, err := d.curl(t, "http://name.test/")
	if err != nil || body != "seen from "+netlab.ClientVethAddr4 {
		t.Fatalf("name.test (final: direct): %q, %v; want it seen from C's veth", body, err)
	}
	if a, err := netip.ParseAddr(fake); err != nil || !config.DefaultFakeIPRange.Contains(a) && !config.DefaultFakeIP6Range.Contains(a) {
		t.Errorf("name.test connected to %s, want a fake address", fake)
	}

	body, _, err = d.curl(t, "http://www.proxied.example/")
	if err != nil || body != "seen from "+netlab.ServerAddr4 {
		t.Errorf("www.proxied.example (socks): %q, %v; want it seen from the proxy in S", body, err)
	}
	if !strings.Contains(d.dnsmasq.String(), "www.proxied.example from "+netlab.ServerAddr4) {
		t.Errorf("the proxy did not resolve www.proxied.example itself; dnsmasq saw:\n%s", d.dnsmasq)
	}

	start := time.Now()
	_, _, err = d.curl(t, "http://blocked.example/")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 || time.Since(start) > 3*time.Second {
		t.Errorf("blocked.example: %v after %v; want curl's exit 7 (connection refused) at once", err, time.Since(start))
	}

	p.term(t)
	p = startAutoRoute(t, d.lab, env, "--config", vpnExample)
	defer p.term(t)
	_, again, err := d.curl(t, "http://name.test/")
	if err != nil || again != fake {
		t.Errorf("after a restart name.test connected to %s (%v), want the same fake address %s", again, err, fake)
	}
	if !strings.Contains(d.dnsmasq.String(), "name.test from "+netlab.ClientVethAddr4) {
		// The direct outbound resolves the real address with dns.servers,
		// over the gateway's marked socket from C.
		t.Errorf("the direct outbound did not resolve name.test with dns.servers; dnsmasq saw:\n%s", d.dnsmasq)
	}
}
