package netlab

import (
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestNew_CloseRemovesNamespacesAndLock(t *testing.T) {
	skipUnlessRoot(t)
	l, err := New(Options{Name: testPrefix, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	names := []string{l.Client().Name, l.Server().Name}
	for _, name := range names {
		if !nsExists(name) {
			t.Errorf("namespace %s missing while the lab is open", name)
		}
	}
	if _, err := os.Stat(lockPath(l.Name())); err != nil {
		t.Errorf("lock file missing while the lab is open: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, name := range names {
		if nsExists(name) {
			t.Errorf("namespace %s left behind after Close", name)
		}
	}
	if _, err := os.Stat(lockPath(l.Name())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file left behind after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestNew_NamesAreUniquePerLab(t *testing.T) {
	a, b := newTestLab(t), newTestLab(t)
	if a.Name() == b.Name() {
		t.Fatalf("two labs share the name %q", a.Name())
	}
	if !strings.HasPrefix(a.Name(), testPrefix) || len(a.Name()) != len(testPrefix)+6 {
		t.Errorf("Name() = %q, want %q + 6 hex digits", a.Name(), testPrefix)
	}
	for _, ifname := range []string{a.ClientVeth(), a.ServerVeth()} {
		if len(ifname) > unix.IFNAMSIZ-1 {
			t.Errorf("interface name %q longer than %d", ifname, unix.IFNAMSIZ-1)
		}
	}
}

func TestNew_FailedSetupLeavesNothingBehind(t *testing.T) {
	skipUnlessRoot(t)
	prefix := uniquePrefix(t, "nltfail")
	// veth refuses an MTU above 65535, which fails after both namespaces
	// exist.
	_, err := New(Options{Name: prefix, MTU: 70000, Logger: testLogger(t)})
	if err == nil {
		t.Fatal("New with MTU 70000 succeeded, want error")
	}
	if !strings.Contains(err.Error(), "veth") {
		t.Errorf("error %q does not name the failed step", err)
	}
	if left := namesWithPrefix(t, netnsRunDir, prefix); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	if left := namesWithPrefix(t, lockDir, prefix); len(left) > 0 {
		t.Errorf("lock files left behind: %v", left)
	}
}

func TestNew_RejectsInvalidPrefix(t *testing.T) {
	for _, name := range []string{"bad/name", "1starts-with-digit", "has-dash", strings.Repeat("x", 33)} {
		if _, err := newLab(Options{Name: name}); err == nil {
			t.Errorf("prefix %q accepted", name)
		}
	}
	if _, err := newLab(Options{Name: "ok_name.1"}); err != nil {
		t.Errorf("valid prefix rejected: %v", err)
	}
}

func TestNew_AppliesDefaultsAndMTU(t *testing.T) {
	l := newTestLabOpts(t, Options{Name: testPrefix, MTU: 9000})
	for _, side := range []struct {
		ns   *NS
		link string
	}{{l.Client(), l.ClientVeth()}, {l.Server(), l.ServerVeth()}} {
		link, err := side.ns.Netlink().LinkByName(side.link)
		if err != nil {
			t.Fatal(err)
		}
		if got := link.Attrs().MTU; got != 9000 {
			t.Errorf("%s MTU = %d, want 9000", side.link, got)
		}
	}
	if got, err := newLab(Options{}); err != nil || got.prefix != DefaultPrefix || got.mtu != DefaultMTU {
		t.Errorf("defaults: prefix %q mtu %d err %v", got.prefix, got.mtu, err)
	}
}

func TestCleanupStale_RemovesDeadLabsKeepsLiveOnes(t *testing.T) {
	skipUnlessRoot(t)
	prefix := uniquePrefix(t, "nltstale")
	live := newTestLabOpts(t, Options{Name: prefix})
	dead := prefix + "dead00"
	if live.Name() == dead {
		t.Skip("random id collided with the fixture's")
	}
	for _, suffix := range []string{"-c", "-s"} {
		h, err := createNamedNS(dead + suffix)
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
	}
	t.Cleanup(func() { removeLabNamespaces(dead) })
	orphanLock := lockPath(prefix + "0ff1ce")
	if err := os.WriteFile(orphanLock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(orphanLock) })

	if err := CleanupStale(prefix); err != nil {
		t.Fatalf("CleanupStale: %v", err)
	}

	for _, name := range []string{dead + "-c", dead + "-s"} {
		if nsExists(name) {
			t.Errorf("stale namespace %s survived", name)
		}
	}
	if _, err := os.Stat(orphanLock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan lock file survived: %v", err)
	}
	for _, name := range []string{live.Client().Name, live.Server().Name} {
		if !nsExists(name) {
			t.Errorf("live namespace %s removed", name)
		}
	}
	c, err := live.Client().DialContext(testContext(t, 5*time.Second), "tcp", listenEcho(t, live, ServerAddr4))
	if err != nil {
		t.Fatalf("live lab broken after CleanupStale: %v", err)
	}
	defer c.Close()
	assertEcho(t, c)
}

func TestDo_RunsInsideNamespaceAndLeavesCallerAlone(t *testing.T) {
	l := newTestLab(t)
	// Pin the test goroutine so "the caller's namespace" is one thread's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	var inside []string
	err = l.Client().Do(func() error {
		links, err := netlink.LinkList()
		for _, link := range links {
			inside = append(inside, link.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if !slices.Contains(inside, l.ClientVeth()) || slices.Contains(inside, l.ServerVeth()) {
		t.Errorf("links seen inside Do = %v, want %s and not %s", inside, l.ClientVeth(), l.ServerVeth())
	}

	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Errorf("caller's namespace changed by Do: %s -> %s", before, after)
	}
	if _, err := netlink.LinkByName(l.ClientVeth()); err == nil {
		t.Errorf("%s visible from the caller's namespace", l.ClientVeth())
	}
}

func TestDo_ReturnsErrorOfF(t *testing.T) {
	l := newTestLab(t)
	want := errors.New("from f")
	if err := l.Server().Do(func() error { return want }); !errors.Is(err, want) {
		t.Errorf("Do = %v, want %v", err, want)
	}
}

func TestDo_RepanicsInCaller(t *testing.T) {
	l := newTestLab(t)
	defer func() {
		if p := recover(); p != "boom" {
			t.Errorf("recovered %v, want boom", p)
		}
	}()
	l.Client().Do(func() error { panic("boom") })
	t.Error("Do returned after f panicked")
}

func TestClosedLab_RefusesDoDialListenAndRouting(t *testing.T) {
	skipUnlessRoot(t)
	l, err := New(Options{Name: testPrefix, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	called := false
	if err := l.Client().Do(func() error { called = true; return nil }); !errors.Is(err, net.ErrClosed) || called {
		t.Errorf("Do after Close = %v (f called: %v), want net.ErrClosed", err, called)
	}
	if _, err := l.Client().DialContext(testContext(t, 5*time.Second), "tcp", ServerAddr4+":80"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DialContext after Close = %v, want net.ErrClosed", err)
	}
	if _, err := l.Client().DialAsUID(testContext(t, 5*time.Second), 1000, "tcp", ServerAddr4+":80"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DialAsUID after Close = %v, want net.ErrClosed", err)
	}
	if _, err := l.Client().RoutingSnapshot(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("RoutingSnapshot after Close = %v, want net.ErrClosed", err)
	}
	if _, err := l.Server().Listen("tcp", ServerAddr4+":0"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen after Close = %v, want net.ErrClosed", err)
	}
	if err := l.RouteViaTUN(testContext(t, 5*time.Second), "tun0"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("RouteViaTUN after Close = %v, want net.ErrClosed", err)
	}
	if err := l.Unroute(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Unroute after Close = %v, want net.ErrClosed", err)
	}
}

func TestCommand_RunsInNamespace(t *testing.T) {
	l := newTestLab(t)
	out, err := l.Server().Command(testContext(t, 10*time.Second), "ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip link in %s: %v", l.Server().Name, err)
	}
	if !strings.Contains(string(out), l.ServerVeth()) || strings.Contains(string(out), l.ClientVeth()) {
		t.Errorf("ip link in S shows:\n%s\nwant %s and not %s", out, l.ServerVeth(), l.ClientVeth())
	}
}

func TestClose_ReleasesEveryDescriptor(t *testing.T) {
	skipUnlessRoot(t)
	// A subtest, so that the echo servers' cleanups run before counting.
	use := func(t *testing.T) {
		l := newTestLab(t)
		ctx := testContext(t, 5*time.Second)
		for _, target := range []struct{ network, addr string }{
			{"tcp", listenEcho(t, l, ServerAddr4)}, {"tcp", listenEcho(t, l, ServerAddr6)},
			{"udp", ServerAddr4 + ":9"}, {"udp", "[" + ServerAddr6 + "]:9"},
		} {
			c, err := l.Client().DialContext(ctx, target.network, target.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	t.Run("warm-up", use) // lets the runtime open what it keeps open (netpoll, ...)
	before := openFDs(t)
	t.Run("measured", use)
	if after := openFDs(t); after != before {
		t.Errorf("socket and namespace descriptors: %d before the lab, %d after Close", before, after)
	}
}

// openFDs counts the process's socket and namespace descriptors, the kinds
// a Lab opens (the runtime and the test framework open others on their own).
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.HasPrefix(target, "socket:") || strings.HasPrefix(target, "net:") {
			n++
		}
	}
	return n
}

func TestNew_WithoutRootFailsWithErrNeedRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs only without root")
	}
	if _, err := New(Options{Name: testPrefix}); !errors.Is(err, ErrNeedRoot) {
		t.Errorf("New without root = %v, want ErrNeedRoot", err)
	}
}

func TestSysctl_SetAndReadBackStaysInNamespace(t *testing.T) {
	l := newTestLab(t)
	const key = "net/ipv4/ip_local_port_range"
	if got, err := l.Client().Sysctl(key); err != nil || got != "10240\t65535" {
		t.Fatalf("lab default %s = %q, %v; want the lab's wide range", key, got, err)
	}
	if err := l.Client().SetSysctl(key, "40000 40999"); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Client().Sysctl(key); err != nil || got != "40000\t40999" {
		t.Errorf("after set: %q, %v", got, err)
	}
	if got, err := l.Server().Sysctl(key); err != nil || got != "10240\t65535" {
		t.Errorf("server namespace changed too: %q, %v", got, err)
	}
	if _, err := l.Client().Sysctl("net/no/such/key"); err == nil {
		t.Error("reading a missing key: no error")
	}
}
