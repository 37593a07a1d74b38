package dns

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
)

var (
	range4 = netip.MustParsePrefix("198.18.128.0/29") // 7 usable, one reserved below
	range6 = netip.MustParsePrefix("2001:2:0:ff::/120")
	tunIP  = netip.MustParseAddr("198.18.128.1")
)

func newTestPool(t *testing.T, store Store) *Pool {
	t.Helper()
	p, err := NewPool(range4, range6, []netip.Addr{tunIP}, store)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAssign(t *testing.T, p *Pool, d string) (netip.Addr, netip.Addr) {
	t.Helper()
	v4, v6, err := p.Assign(d)
	if err != nil {
		t.Fatalf("Assign(%s): %v", d, err)
	}
	return v4, v6
}

func TestPool_SameDomainSameAddresses(t *testing.T) {
	p := newTestPool(t, nil)
	a4, a6 := mustAssign(t, p, "a.test")
	b4, b6 := mustAssign(t, p, "b.test")
	if a4 == b4 || a6 == b6 {
		t.Fatalf("two domains share addresses: %s %s / %s %s", a4, a6, b4, b6)
	}
	if c4, c6 := mustAssign(t, p, "a.test"); c4 != a4 || c6 != a6 {
		t.Errorf("a.test again: %s %s, want %s %s", c4, c6, a4, a6)
	}
	for _, a := range []netip.Addr{a4, a6, netip.AddrFrom16(a4.As16())} {
		if d, ok := p.Lookup(a); !ok || d != "a.test" {
			t.Errorf("Lookup(%s) = %q, %v", a, d, ok)
		}
	}
	if _, ok := p.Lookup(netip.MustParseAddr("198.18.128.7")); ok {
		t.Error("an address never handed out has a domain")
	}
}

func TestPool_NeverHandsOutReservedOrNetworkAddresses(t *testing.T) {
	p := newTestPool(t, nil)
	if p.Capacity() != 6 {
		t.Fatalf("capacity %d, want 6 (8 addresses less the network address and the TUN's)", p.Capacity())
	}
	seen := map[netip.Addr]bool{}
	for i := range 6 {
		v4, _ := mustAssign(t, p, fmt.Sprintf("d%d.test", i))
		if v4 == tunIP || v4 == range4.Addr() || !range4.Contains(v4) || seen[v4] {
			t.Fatalf("handed out %s", v4)
		}
		seen[v4] = true
	}
}

func TestPool_FullPoolEvictsLeastRecentlyUsed(t *testing.T) {
	p := newTestPool(t, nil)
	addrs := map[string]netip.Addr{}
	for i := range 6 {
		d := fmt.Sprintf("d%d.test", i)
		addrs[d], _ = mustAssign(t, p, d)
	}
	p.Lookup(addrs["d0.test"])  // d0 used again: d1 is now the oldest
	mustAssign(t, p, "d2.test") // and d2 by a query
	n4, _ := mustAssign(t, p, "new.test")
	if n4 != addrs["d1.test"] {
		t.Errorf("new.test got %s, want d1.test's %s (least recently used)", n4, addrs["d1.test"])
	}
	if _, ok := p.Lookup(addrs["d1.test"]); !ok {
		t.Error("the reused address has no domain")
	}
	if d, _ := p.Lookup(addrs["d1.test"]); d != "new.test" {
		t.Errorf("reused address maps to %q", d)
	}
	if p.Len() != 6 {
		t.Errorf("Len %d, want 6", p.Len())
	}
	if d, _ := p.Lookup(addrs["d0.test"]); d != "d0.test" {
		t.Errorf("recently used d0.test was evicted")
	}
}

func TestPool_WrapsAroundTheRange(t *testing.T) {
	p := newTestPool(t, nil)
	for i := range 50 {
		v4, v6 := mustAssign(t, p, fmt.Sprintf("d%d.test", i))
		if !range4.Contains(v4) || !range6.Contains(v6) || v4 == tunIP {
			t.Fatalf("round %d: %s %s", i, v4, v6)
		}
	}
}

func TestPool_PersistsAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dns.db")
	store, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	p := newTestPool(t, store)
	a4, a6 := mustAssign(t, p, "a.test")
	b4, _ := mustAssign(t, p, "b.test")
	mustAssign(t, p, "a.test") // a is now more recent than b
	if _, err := OpenStore(path); err == nil {
		t.Fatal("a second process opened the cache file in use")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	store, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	q := newTestPool(t, store)
	defer q.Close()
	if c4, c6 := mustAssign(t, q, "a.test"); c4 != a4 || c6 != a6 {
		t.Errorf("after restart a.test is %s %s, want %s %s", c4, c6, a4, a6)
	}
	if d, ok := q.Lookup(b4); !ok || d != "b.test" {
		t.Errorf("after restart %s maps to %q, %v", b4, d, ok)
	}
	// New domains continue after the stored ones, and eviction follows
	// the stored order: b (older) goes first.
	for i := range 4 {
		v4, _ := mustAssign(t, q, fmt.Sprintf("n%d.test", i))
		if v4 == a4 || v4 == b4 {
			t.Fatalf("n%d.test reused a stored address %s", i, v4)
		}
	}
	q.Lookup(a4)
	if v4, _ := mustAssign(t, q, "last.test"); v4 != b4 {
		t.Errorf("last.test got %s, want b.test's %s", v4, b4)
	}
}

func TestPool_DropsStoredMappingsOfAnotherRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dns.db")
	store, _ := OpenStore(path)
	if err := store.Put([]Mapping{
		{Domain: "old.test", V4: netip.MustParseAddr("198.19.7.7"), V6: netip.MustParseAddr("2001:2:0:ff::7"), Used: 1},
		{Domain: "ok.test", V4: netip.MustParseAddr("198.18.128.3"), V6: netip.MustParseAddr("2001:2:0:ff::3"), Used: 2},
		{Domain: "tun.test", V4: tunIP, V6: netip.MustParseAddr("2001:2:0:ff::9"), Used: 3},
	}); err != nil {
		t.Fatal(err)
	}
	p := newTestPool(t, store)
	defer p.Close()
	if p.Len() != 1 {
		t.Errorf("loaded %d mappings, want only ok.test", p.Len())
	}
	if d, ok := p.Lookup(netip.MustParseAddr("198.18.128.3")); !ok || d != "ok.test" {
		t.Errorf("ok.test not loaded: %q %v", d, ok)
	}
}

func TestNewPool_RefusesTinyRanges(t *testing.T) {
	if _, err := NewPool(netip.MustParsePrefix("198.18.0.0/31"), range6, nil, nil); err == nil {
		t.Error("a /31 was accepted")
	}
}
