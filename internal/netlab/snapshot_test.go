package netlab

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Snapshot section headers, as RoutingSnapshot writes them.
const (
	rules4Section  = "ip -4 rule show"
	rules6Section  = "ip -6 rule show"
	routes4Section = "ip -4 route show table all"
	routes6Section = "ip -6 route show table all"
)

// splitSnapshot splits a snapshot into its sections by header, checking
// that there are exactly the four, in order.
func splitSnapshot(t testing.TB, snap string) map[string]string {
	t.Helper()
	sections := map[string]string{}
	var order []string
	for _, part := range strings.Split(snap, "== ")[1:] {
		header, body, _ := strings.Cut(part, "\n")
		sections[header] = body
		order = append(order, header)
	}
	want := []string{rules4Section, rules6Section, routes4Section, routes6Section}
	if !strings.HasPrefix(snap, "== ") || strings.Join(order, "|") != strings.Join(want, "|") {
		t.Fatalf("snapshot sections %q, want %q; snapshot:\n%s", order, want, snap)
	}
	return sections
}

func snapshot(t testing.TB, n *NS) string {
	t.Helper()
	s, err := n.RoutingSnapshot()
	if err != nil {
		t.Fatalf("RoutingSnapshot of %s: %v", n.Name, err)
	}
	return s
}

func TestRoutingSnapshot_ShowsRulesAndEveryTableOfTheNamespace(t *testing.T) {
	l := newTestLabOpts(t, Options{Name: testPrefix, DefaultRoute: true})
	sections := splitSnapshot(t, snapshot(t, l.Client()))
	for header, want := range map[string]string{
		rules4Section:  "32766:\tfrom all lookup main",
		rules6Section:  "32766:\tfrom all lookup main",
		routes4Section: "default via " + ServerAddr4 + " dev " + l.ClientVeth(),
		routes6Section: "default via " + ServerAddr6 + " dev " + l.ClientVeth(),
	} {
		if !strings.Contains(sections[header], want) {
			t.Errorf("section %q lacks %q:\n%s", header, want, sections[header])
		}
	}
	// The local table is part of "table all".
	if want := "local " + ClientVethAddr4 + " dev " + l.ClientVeth() + " table local"; !strings.Contains(sections[routes4Section], want) {
		t.Errorf("IPv4 routes lack %q:\n%s", want, sections[routes4Section])
	}
	server := snapshot(t, l.Server())
	if !strings.Contains(server, l.ServerVeth()) || strings.Contains(server, l.ClientVeth()) {
		t.Errorf("snapshot of S shows another namespace:\n%s", server)
	}
}

func TestRoutingSnapshot_ChangesWithRuleAndRouteAndRestoresAfterRemoval(t *testing.T) {
	l := newTestLab(t)
	h := l.Client().Netlink()
	link, err := h.LinkByName(l.ClientVeth())
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, l.Client())

	const table, priority = 4321, 4321
	var rules []*netlink.Rule
	var routes []*netlink.Route
	for _, fam := range []struct {
		family int
		dst    string
	}{{netlink.FAMILY_V4, "198.18.99.0/24"}, {netlink.FAMILY_V6, "2001:2:0:99::/64"}} {
		r := netlink.NewRule()
		r.Family, r.Priority, r.Table = fam.family, priority, table
		rules = append(rules, r)
		_, dst, err := net.ParseCIDR(fam.dst)
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Table: table})
	}
	for _, r := range rules {
		if err := h.RuleAdd(r); err != nil {
			t.Fatalf("add rule %s: %v", r, err)
		}
	}
	for _, r := range routes {
		if err := h.RouteAdd(r); err != nil {
			t.Fatalf("add route %s: %v", r, err)
		}
	}

	changed := splitSnapshot(t, snapshot(t, l.Client()))
	for header, want := range map[string]string{
		rules4Section:  "4321:\tfrom all lookup 4321",
		rules6Section:  "4321:\tfrom all lookup 4321",
		routes4Section: "198.18.99.0/24 dev " + l.ClientVeth() + " table 4321",
		routes6Section: "2001:2:0:99::/64 dev " + l.ClientVeth() + " table 4321",
	} {
		if !strings.Contains(changed[header], want) {
			t.Errorf("after adding: section %q lacks %q:\n%s", header, want, changed[header])
		}
	}

	for _, r := range rules {
		if err := h.RuleDel(r); err != nil {
			t.Fatalf("delete rule %s: %v", r, err)
		}
	}
	for _, r := range routes {
		if err := h.RouteDel(r); err != nil {
			t.Fatalf("delete route %s: %v", r, err)
		}
	}
	if after := snapshot(t, l.Client()); after != before {
		t.Errorf("snapshot after removing the rule and routes differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestRoutingSnapshot_KeepsExpiringRouteWithoutItsCountdown(t *testing.T) {
	l := newTestLab(t)
	if _, err := l.Client().ipOutput("-6", "route", "add", "2001:2:0:99::/64", "via", ServerAddr6, "expires", "300"); err != nil {
		t.Fatal(err)
	}
	raw, err := l.Client().ipOutput("-6", "route", "show", "2001:2:0:99::/64")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(raw, " expires ") {
		t.Fatalf("ip shows the expiring route without its countdown, so the test shows nothing:\n%s", raw)
	}
	routes := splitSnapshot(t, snapshot(t, l.Client()))[routes6Section]
	want := "2001:2:0:99::/64 via " + ServerAddr6 + " dev " + l.ClientVeth() + " metric 1024 pref medium\n"
	if !strings.Contains(routes, want) || strings.Contains(routes, "expires") {
		t.Errorf("IPv6 routes:\n%s\nwant the line %q and no countdown", routes, want)
	}
}

func TestNormalizeRoutes_RemovesOnlyExpiryCountdown(t *testing.T) {
	in := "2001:2:0:99::/64 via 2001:2:0:1::2 dev vc-1 metric 1024 expires 297sec pref medium\n" +
		"default via 2001:2:0:1::2 dev vc-1 proto ra metric 1024 expires -3sec pref medium\n" +
		"198.19.0.0/24 dev vc-1 proto kernel scope link src 198.19.0.1 \n"
	want := "2001:2:0:99::/64 via 2001:2:0:1::2 dev vc-1 metric 1024 pref medium\n" +
		"default via 2001:2:0:1::2 dev vc-1 proto ra metric 1024 pref medium\n" +
		"198.19.0.0/24 dev vc-1 proto kernel scope link src 198.19.0.1 \n"
	if got := normalizeRoutes(in); got != want {
		t.Errorf("normalizeRoutes:\n%s\nwant:\n%s", got, want)
	}
}

// A PMTU exception (route cache entry with its own expiry) changes no
// routing configuration, and the snapshot must not see it.
func TestRoutingSnapshot_IgnoresPMTUException(t *testing.T) {
	l := newTestLab(t)
	before := snapshot(t, l.Client())
	dst := netip.AddrPortFrom(netip.MustParseAddr(ServerAddr6), 9)
	c, err := l.Client().DialContext(testContext(t, 5*time.Second), "udp6", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := c.LocalAddr().(*net.UDPAddr).AddrPort()
	sendPacketTooBig(t, l, src, dst, 1280)
	// The kernel records the exception before it reports EMSGSIZE on the
	// connected socket, so the error says the exception exists.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("read after Packet Too Big = %v, want EMSGSIZE", err)
	}
	cache, err := l.Client().ipOutput("-6", "route", "show", "cache")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cache, ServerAddr6+" dev "+l.ClientVeth()) || !strings.Contains(cache, "mtu 1280") {
		t.Fatalf("no PMTU exception for %s in C's route cache:\n%s", ServerAddr6, cache)
	}
	if after := snapshot(t, l.Client()); after != before {
		t.Errorf("snapshot changed by a PMTU exception:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// sendPacketTooBig sends from S to C an ICMPv6 Packet Too Big about a UDP
// datagram from src (in C) to dst, announcing mtu.
func sendPacketTooBig(t testing.TB, l *Lab, src, dst netip.AddrPort, mtu uint32) {
	t.Helper()
	msg := make([]byte, 8+40+8)
	msg[0] = 2 // Packet Too Big; the kernel fills in the checksum
	binary.BigEndian.PutUint32(msg[4:], mtu)
	quoted := msg[8:] // the invoking packet: IPv6 header and UDP header
	quoted[0] = 6 << 4
	binary.BigEndian.PutUint16(quoted[4:], 8)
	quoted[6], quoted[7] = unix.IPPROTO_UDP, 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(quoted[8:24], s[:])
	copy(quoted[24:40], d[:])
	binary.BigEndian.PutUint16(quoted[40:], src.Port())
	binary.BigEndian.PutUint16(quoted[42:], dst.Port())
	binary.BigEndian.PutUint16(quoted[44:], 8)
	err := l.Server().Do(func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, msg, 0, &unix.SockaddrInet6{Addr: s})
	})
	if err != nil {
		t.Fatalf("send Packet Too Big from S: %v", err)
	}
}
