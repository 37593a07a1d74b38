package netlab

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const testTUN = "nlttun0"

// openTUN creates a TUN device in C carrying TUNPrefix4 and TUNPrefix6 and
// returns its descriptor (non-blocking, so reads honour deadlines). The
// device disappears when the descriptor is closed at the end of the test.
func openTUN(t testing.TB, l *Lab, name string, up bool) *os.File {
	t.Helper()
	var tun *os.File
	err := l.Client().Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		tun = os.NewFile(uintptr(fd), "/dev/net/tun")
		return nil
	})
	if err != nil {
		t.Fatalf("create TUN %s in C: %v", name, err)
	}
	t.Cleanup(func() { tun.Close() })
	h := l.Client().Netlink()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, cidr := range []string{TUNPrefix4, TUNPrefix6} {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		a.Flags = addrFlags(a.IPNet)
		if err := h.AddrAdd(link, a); err != nil {
			t.Fatalf("add %s to %s: %v", cidr, name, err)
		}
	}
	if up {
		if err := h.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
	return tun
}

// readUDPFrom reads IP packets from f (a TUN or a packet socket) until a
// UDP datagram to dst with the payload arrives.
func readUDPFrom(t testing.TB, f *os.File, dst netip.AddrPort, payload string) {
	t.Helper()
	f.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 65536)
	for {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatalf("no UDP datagram to %s on %s: %v", dst, f.Name(), err)
		}
		if to, data, ok := parseUDP(buf[:n]); ok && to == dst && string(data) == payload {
			return
		}
	}
}

// parseUDP extracts destination and payload of an IPv4 or IPv6 (without
// extension headers) UDP packet.
func parseUDP(p []byte) (netip.AddrPort, []byte, bool) {
	var dst netip.Addr
	var udp []byte
	switch {
	case len(p) >= 20 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_UDP:
		dst = netip.AddrFrom4([4]byte(p[16:20]))
		udp = p[int(p[0]&0x0f)*4:]
	case len(p) >= 40 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_UDP:
		dst = netip.AddrFrom16([16]byte(p[24:40]))
		udp = p[40:]
	default:
		return netip.AddrPort{}, nil, false
	}
	if len(udp) < 8 {
		return netip.AddrPort{}, nil, false
	}
	return netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:4])), udp[8:], true
}

func TestRouteViaTUN_UnmarkedTrafficEntersTUNMarkedUsesVeth(t *testing.T) {
	l := newTestLab(t)
	tun := openTUN(t, l, testTUN, true)
	if err := l.RouteViaTUN(testContext(t, 5*time.Second), testTUN); err != nil {
		t.Fatalf("RouteViaTUN: %v", err)
	}
	marked := &Dialer{NS: l.Client(), Mark: Fwmark}
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			ctx := testContext(t, 5*time.Second)
			dst := netip.AddrPortFrom(netip.MustParseAddr(fam.server), 9)
			c, err := l.Client().DialContext(ctx, "udp", dst.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("unmarked " + fam.name)); err != nil {
				t.Fatal(err)
			}
			readUDPFrom(t, tun, dst, "unmarked "+fam.name)

			assertUDPReachesServer(t, l, marked, fam.server)
			mc, err := marked.DialContext(ctx, "tcp", listenEcho(t, l, fam.server))
			if err != nil {
				t.Fatalf("marked TCP dial: %v", err)
			}
			defer mc.Close()
			assertEcho(t, mc)
		})
	}
}

// assertUDPReachesServer sends a datagram through d to a fresh socket in S.
func assertUDPReachesServer(t testing.TB, l *Lab, d *Dialer, server string) {
	t.Helper()
	pc, err := l.Server().ListenPacket("udp", net.JoinHostPort(server, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := d.DialContext(testContext(t, 5*time.Second), "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("to S")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 16)
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "to S" {
		t.Fatalf("server in S read %q, %v; want the datagram (mark %d)", buf[:n], err, d.Mark)
	}
}

func TestUnroute_RestoresDirectPath(t *testing.T) {
	l := newTestLab(t)
	openTUN(t, l, testTUN, true)
	if err := l.RouteViaTUN(testContext(t, 5*time.Second), testTUN); err != nil {
		t.Fatalf("RouteViaTUN: %v", err)
	}
	if err := l.Unroute(); err != nil {
		t.Fatalf("Unroute: %v", err)
	}
	if err := l.Unroute(); err != nil {
		t.Errorf("second Unroute = %v, want nil", err)
	}
	assertNoTableRules(t, l)
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			c, err := l.Client().DialContext(testContext(t, 2*time.Second), "tcp", listenEcho(t, l, fam.server))
			if err != nil {
				t.Fatalf("unmarked dial after Unroute: %v", err)
			}
			defer c.Close()
			assertEcho(t, c)
			assertUDPReachesServer(t, l, &Dialer{NS: l.Client()}, fam.server)
		})
	}
}

func TestRouteViaTUN_WaitsForTUNToAppear(t *testing.T) {
	l := newTestLab(t)
	result := make(chan error, 1)
	go func() { result <- l.RouteViaTUN(testContext(t, 5*time.Second), testTUN) }()
	tun := openTUN(t, l, testTUN, true)
	if err := <-result; err != nil {
		t.Fatalf("RouteViaTUN: %v", err)
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr(ServerAddr4), 9)
	c, err := l.Client().DialContext(testContext(t, 5*time.Second), "udp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("late tun")); err != nil {
		t.Fatal(err)
	}
	readUDPFrom(t, tun, dst, "late tun")
}

func TestRouteViaTUN_GivesUpWhenTUNStaysDownOrMissing(t *testing.T) {
	l := newTestLab(t)
	openTUN(t, l, testTUN, false)
	for _, name := range []string{testTUN, "nltmissing0"} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err := l.RouteViaTUN(ctx, name)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("RouteViaTUN(%s) = %v, want context.DeadlineExceeded", name, err)
		}
	}
	assertNoTableRules(t, l)
}

func assertNoTableRules(t testing.TB, l *Lab) {
	t.Helper()
	rules, err := l.Client().Netlink().RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Table == Table {
			t.Errorf("policy rule left in C: %s", r)
		}
	}
}

func TestNew_DefaultRouteSendsOffLinkTrafficToSAndNoFurther(t *testing.T) {
	l := newTestLabOpts(t, Options{Name: testPrefix, DefaultRoute: true})
	link, err := l.Client().Netlink().LinkByName(l.ClientVeth())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if v, err := l.Server().Sysctl(key); err != nil || v != "0" {
			t.Errorf("S %s = %q, %v; want 0 (S must not forward)", key, v, err)
		}
	}
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			routes, err := l.Client().Netlink().RouteGet(net.ParseIP(fam.offLink))
			if err != nil {
				t.Fatalf("route get %s in C: %v", fam.offLink, err)
			}
			if len(routes) != 1 || !routes[0].Gw.Equal(net.ParseIP(fam.server)) || routes[0].LinkIndex != link.Attrs().Index {
				t.Errorf("route to %s = %v, want via %s dev %s", fam.offLink, routes, fam.server, l.ClientVeth())
			}

			// The datagram must really leave C towards S's MAC, which needs
			// neighbour resolution of the gateway (ND for IPv6).
			capture := captureOnServerVeth(t, l)
			dst := netip.AddrPortFrom(netip.MustParseAddr(fam.offLink), 9)
			c, err := l.Client().DialContext(testContext(t, 5*time.Second), "udp", dst.String())
			if err != nil {
				t.Fatalf("dial %s along the default route: %v", dst, err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("off-link " + fam.name)); err != nil {
				t.Fatal(err)
			}
			readUDPFrom(t, capture, dst, "off-link "+fam.name)
		})
	}
}

func TestNew_WithoutDefaultRouteOffLinkIsUnreachable(t *testing.T) {
	l := newTestLab(t)
	for _, fam := range families() {
		c, err := l.Client().DialContext(testContext(t, 5*time.Second), "udp", net.JoinHostPort(fam.offLink, "9"))
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, syscall.ENETUNREACH) {
			t.Errorf("%s: dial %s = %v, want ENETUNREACH", fam.name, fam.offLink, err)
		}
	}
}

// captureOnServerVeth opens a packet socket on S's veth that reads IP
// packets as they arrive, without link-layer header (so readUDPFrom can
// parse them); it is closed when the test ends.
func captureOnServerVeth(t testing.TB, l *Lab) *os.File {
	t.Helper()
	link, err := l.Server().Netlink().LinkByName(l.ServerVeth())
	if err != nil {
		t.Fatal(err)
	}
	proto := int(htons(unix.ETH_P_ALL))
	var f *os.File
	err = l.Server().Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: link.Attrs().Index}); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "packet socket on "+l.ServerVeth())
		return nil
	})
	if err != nil {
		t.Fatalf("packet socket on %s: %v", l.ServerVeth(), err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
