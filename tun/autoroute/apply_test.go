//go:build linux

package autoroute

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/tungate/tungate/internal/netlab"
)

// lab is a namespace with a veth default route and a TUN-like link to
// capture into: a persistent TUN that nobody reads, enough for the
// kernel's route lookups.
type lab struct {
	*netlab.Lab
	h     *netlink.Handle
	tun   netlink.Link
	table int
}

const testTUN = "tgar0"

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and links")
	}
	l, err := netlab.New(netlab.Options{Name: "tgar"})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	ns := l.Client().Name
	run(t, "ip", "-n", ns, "route", "add", "default", "via", netlab.ServerAddr4)
	run(t, "ip", "-n", ns, "tuntap", "add", "dev", testTUN, "mode", "tun")
	run(t, "ip", "-n", ns, "addr", "add", "198.18.0.1/15", "dev", testTUN)
	run(t, "ip", "-n", ns, "addr", "add", "2001:2::1/64", "dev", testTUN, "nodad")
	run(t, "ip", "-n", ns, "link", "set", testTUN, "up")
	h := l.Client().Netlink()
	link, err := h.LinkByName(testTUN)
	if err != nil {
		t.Fatal(err)
	}
	return &lab{Lab: l, h: h, tun: link, table: 2022}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// state is the namespace's rules and routes of every table, as ip shows
// them.
func (l *lab) state(t *testing.T) string {
	t.Helper()
	ns := l.Client().Name
	var b strings.Builder
	for _, args := range [][]string{{"-4", "rule"}, {"-6", "rule"}, {"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		b.WriteString(run(t, "ip", append([]string{"-n", ns}, args...)...))
	}
	return b.String()
}

// routeGet is the device `ip route get` picks for dst with the options.
func (l *lab) routeGet(t *testing.T, dst string, opts ...string) string {
	t.Helper()
	args := append([]string{"-n", l.Client().Name, "route", "get", dst}, opts...)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return "error: " + strings.TrimSpace(string(out))
	}
	f := strings.Fields(string(out))
	for i := range f[:len(f)-1] {
		if f[i] == "dev" {
			return f[i+1]
		}
	}
	return strings.TrimSpace(string(out))
}

func (l *lab) install(t *testing.T, cfg Config) *Installed {
	t.Helper()
	p := mustPlan(t, cfg)
	if err := Check(l.h, p, cfg.Mark); err != nil {
		t.Fatalf("Check: %v", err)
	}
	in, err := Install(l.h, p, l.tun.Attrs().Index)
	if err != nil {
		t.Fatalf("Install: %v", err)
	}
	return in
}

func labConfig() Config {
	cfg := defaultConfig()
	cfg.TUN = testTUN
	return cfg
}

func TestInstall_KernelRoutesAsPlanned(t *testing.T) {
	l := newLab(t)
	cfg := labConfig()
	cfg.Exclude = []netip.Prefix{netip.MustParsePrefix("198.19.0.5/32")}
	cfg.ExcludeUID = []UIDRange{{4000, 4000}}
	before := l.state(t)
	in := l.install(t, cfg)
	veth := l.ClientVeth()
	for _, c := range []struct {
		dst  string
		opts []string
		want string
	}{
		{"198.19.0.2", nil, testTUN},
		{"198.19.0.2", []string{"mark", "0x2022"}, veth},
		{"198.19.0.2", []string{"uid", "4000"}, veth},
		{"198.19.0.2", []string{"uid", "4001"}, testTUN},
		{"198.19.0.5", nil, veth},
		{"10.1.2.3", nil, veth},
		{"2001:2:0:1::2", nil, testTUN},
		{"2001:2:0:1::2", []string{"mark", "0x2022"}, veth},
	} {
		if got := l.routeGet(t, c.dst, c.opts...); got != c.want {
			t.Errorf("route get %s %v: %s, want %s", c.dst, c.opts, got, c.want)
		}
	}
	if err := in.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if after := l.state(t); after != before {
		t.Errorf("state after Remove differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := in.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestInstall_StrictDNSAndFailClosed(t *testing.T) {
	l := newLab(t)
	cfg := labConfig()
	cfg.Strict = true
	in := l.install(t, cfg)
	defer in.Remove()
	if got := l.routeGet(t, "10.0.0.1", "ipproto", "udp", "dport", "53"); got != testTUN {
		t.Errorf("strict: DNS to 10.0.0.1 goes to %s, want %s", got, testTUN)
	}
	if got := l.routeGet(t, "10.0.0.1", "ipproto", "tcp", "dport", "80"); got != l.ClientVeth() {
		t.Errorf("strict: HTTP to 10.0.0.1 goes to %s, want the veth", got)
	}
	// The TUN goes away as when the gateway dies: no leak via the veth.
	run(t, "ip", "-n", l.Client().Name, "link", "del", testTUN)
	if got := l.routeGet(t, "198.19.0.2"); !strings.Contains(got, "No route to host") {
		t.Errorf("strict without the TUN: %s, want unreachable (No route to host)", got)
	}
}

func TestCleanup_RemovesOnlyOwnStaleState(t *testing.T) {
	l := newLab(t)
	ns := l.Client().Name
	// A neighbour's rules and table: another tungate, and the host's own.
	run(t, "ip", "-n", ns, "rule", "add", "priority", "8000", "lookup", "3000", "protocol", fmt.Sprint(Protocol))
	run(t, "ip", "-n", ns, "route", "add", "unreachable", "198.19.7.0/24", "table", "3000", "protocol", fmt.Sprint(Protocol))
	run(t, "ip", "-n", ns, "rule", "add", "priority", "9500", "lookup", "main")
	withNeighbours := l.state(t)

	in := l.install(t, labConfig())
	_ = in // abandoned, as by a killed gateway
	n, err := Cleanup(l.h, 2022, 9000)
	if err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if want := len(mustPlan(t, labConfig()).Rules) + len(mustPlan(t, labConfig()).Routes); n != want {
		t.Errorf("Cleanup removed %d, want %d", n, want)
	}
	if got := l.state(t); got != withNeighbours {
		t.Errorf("after Cleanup:\n%s\nwant:\n%s", got, withNeighbours)
	}
	if n, err := Cleanup(l.h, 2022, 9000); n != 0 || err != nil {
		t.Errorf("second Cleanup: %d, %v", n, err)
	}
}

func TestCleanup_AfterTUNGoneRemovesRulesAndUnreachableRoutes(t *testing.T) {
	l := newLab(t)
	before := l.state(t)
	cfg := labConfig()
	cfg.Strict = true
	l.install(t, cfg)
	run(t, "ip", "-n", l.Client().Name, "link", "del", testTUN)
	if _, err := Cleanup(l.h, 2022, 9000); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	// before had the TUN; compare without its lines.
	want := withoutLines(before, testTUN)
	if got := l.state(t); got != want {
		t.Errorf("after Cleanup:\n%s\nwant:\n%s", got, want)
	}
}

func withoutLines(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if !strings.Contains(line, substr) && !strings.Contains(line, "198.18.") && !strings.Contains(line, "2001:2::") {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func TestCheck_NamesTheConflictingField(t *testing.T) {
	l := newLab(t)
	ns := l.Client().Name
	p := mustPlan(t, labConfig())
	for _, c := range []struct {
		add, del []string
		want     Field
	}{
		{[]string{"rule", "add", "priority", "100", "lookup", "2022"}, []string{"rule", "del", "priority", "100"}, FieldTable},
		{[]string{"route", "add", "unreachable", "198.19.9.0/24", "table", "2022"}, []string{"route", "del", "unreachable", "198.19.9.0/24", "table", "2022"}, FieldTable},
		{[]string{"rule", "add", "priority", "9004", "lookup", "main"}, []string{"rule", "del", "priority", "9004"}, FieldPriority},
		{[]string{"-6", "rule", "add", "priority", "9009", "lookup", "main"}, []string{"-6", "rule", "del", "priority", "9009"}, FieldPriority},
		{[]string{"rule", "add", "priority", "200", "fwmark", "0x2022", "lookup", "main"}, []string{"rule", "del", "priority", "200"}, FieldMark},
		{[]string{"rule", "add", "priority", "9003", "lookup", "3000", "protocol", fmt.Sprint(Protocol)}, []string{"rule", "del", "priority", "9003"}, FieldPriority},
		{[]string{"rule", "add", "priority", "7000", "lookup", "2022", "protocol", fmt.Sprint(Protocol)}, []string{"rule", "del", "priority", "7000"}, FieldTable},
	} {
		run(t, "ip", append([]string{"-n", ns}, c.add...)...)
		before := l.state(t)
		err := Check(l.h, p, 0x2022)
		var ce *ConflictError
		if !errors.As(err, &ce) || ce.Field != c.want {
			t.Errorf("ip %v: Check = %v, want a conflict on field %d", c.add, err, c.want)
		}
		if l.state(t) != before {
			t.Errorf("ip %v: Check changed the state", c.add)
		}
		run(t, "ip", append([]string{"-n", ns}, c.del...)...)
	}
	if err := Check(l.h, p, 0x2022); err != nil {
		t.Errorf("Check on a clean namespace: %v", err)
	}
	// Another tungate's block elsewhere, with the same mark, is no conflict.
	run(t, "ip", "-n", ns, "rule", "add", "priority", "8000", "fwmark", "0x2022", "goto", "8009", "table", "3000", "protocol", fmt.Sprint(Protocol))
	if err := Check(l.h, p, 0x2022); err != nil {
		t.Errorf("Check with another tungate's mark rule: %v", err)
	}
}

func TestInstall_FailureHalfwayRemovesWhatItAdded(t *testing.T) {
	l := newLab(t)
	before := l.state(t)
	p := mustPlan(t, labConfig())
	// A rule Install cannot add: a jump backwards, which the kernel refuses.
	bad := p.Rules[0]
	bad.Goto = bad.Priority - 1
	p.Rules = append(p.Rules[:3:3], bad)
	if _, err := Install(l.h, p, l.tun.Attrs().Index); err == nil {
		t.Fatal("Install of an invalid rule succeeded")
	}
	if after := l.state(t); after != before {
		t.Errorf("failed Install left state behind:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestAcquire_SecondHolderIsRefusedUntilRelease(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: writes " + LockDir)
	}
	a, err := Acquire(987654)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if _, err := Acquire(987654); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("second Acquire: %v, want ErrBusy naming pid %d", err, os.Getpid())
	}
	if err := a.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	b, err := Acquire(987654)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	b.Release()
}
