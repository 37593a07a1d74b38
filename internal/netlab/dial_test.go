package netlab

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// family holds one IP family's addresses of the topology. offLink is an
// address in the lab's ranges that nobody owns and no connected route
// covers, so only a default route leads to it.
type family struct {
	name, digit                                     string // "ipv4", "4"
	server, alt, refuse, blackhole, client, offLink string
}

func families() []family {
	return []family{
		{"ipv4", "4", ServerAddr4, AltServerAddr4, RefuseAddr4, BlackholeAddr4, ClientVethAddr4, "198.18.77.7"},
		{"ipv6", "6", ServerAddr6, AltServerAddr6, RefuseAddr6, BlackholeAddr6, ClientVethAddr6, "2001:2:0:77::7"},
	}
}

func TestDial_TCPReachesServerOverVeth(t *testing.T) {
	l := newTestLab(t)
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			addr := listenEcho(t, l, fam.server)
			c, err := l.Client().DialContext(testContext(t, 5*time.Second), "tcp", addr)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			defer c.Close()
			if _, ok := c.(*net.TCPConn); !ok {
				t.Errorf("conn is %T, want *net.TCPConn", c)
			}
			if got := c.RemoteAddr().String(); got != addr {
				t.Errorf("RemoteAddr = %s, want %s", got, addr)
			}
			local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
			if local != netip.MustParseAddr(fam.client) {
				t.Errorf("LocalAddr = %s, want the client veth address %s", local, fam.client)
			}
			assertEcho(t, c)
		})
	}
}

func TestDial_RefusingAddressIsRefusedQuickly(t *testing.T) {
	l := newTestLab(t)
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			start := time.Now()
			c, err := l.Client().DialContext(testContext(t, 5*time.Second), "tcp", net.JoinHostPort(fam.refuse, "80"))
			if err == nil {
				c.Close()
				t.Fatal("dial to the refusing address succeeded")
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("err = %v, want ECONNREFUSED", err)
			}
			var opErr *net.OpError
			if !errors.As(err, &opErr) || opErr.Op != "dial" {
				t.Errorf("err = %#v, want a dial *net.OpError", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("refusal took %v, want well under 1s", d)
			}
		})
	}
}

func TestDial_AltServerAddressServesItsOwnListeners(t *testing.T) {
	l := newTestLab(t)
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			ctx := testContext(t, 5*time.Second)
			addr := listenEcho(t, l, fam.alt)
			c, err := l.Client().DialContext(ctx, "tcp", addr)
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			defer c.Close()
			if got := c.RemoteAddr().String(); got != addr {
				t.Errorf("RemoteAddr = %s, want %s", got, addr)
			}
			assertEcho(t, c)

			// A listener on the main server address does not answer on the
			// second one: they are distinct destinations.
			_, port, _ := net.SplitHostPort(listenEcho(t, l, fam.server))
			if c, err := l.Client().DialContext(ctx, "tcp", net.JoinHostPort(fam.alt, port)); !errors.Is(err, syscall.ECONNREFUSED) {
				if err == nil {
					c.Close()
				}
				t.Errorf("dial %s port %s of the server address = %v, want ECONNREFUSED", fam.alt, port, err)
			}
		})
	}
}

func TestDial_BlackholeAddressTimesOutAfterSYNsLeaveOverVeth(t *testing.T) {
	l := newTestLab(t)
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			txBefore := vethTxPackets(t, l)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			c, err := l.Client().DialContext(ctx, "tcp", net.JoinHostPort(fam.blackhole, "80"))
			if err == nil {
				c.Close()
				t.Fatal("dial to the blackhole address succeeded")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
				t.Errorf("dial gave up after %v, want about 300ms", d)
			}
			// The SYN must have left C (and been dropped by S), not waited
			// for address resolution that nobody answers.
			if tx := vethTxPackets(t, l); tx <= txBefore {
				t.Errorf("client veth sent %d packets during the dial, want the SYN", tx-txBefore)
			}
			assertBlackholeNeighbour(t, l, fam.blackhole)
		})
	}
}

func assertBlackholeNeighbour(t testing.TB, l *Lab, ip string) {
	t.Helper()
	link, err := l.Client().Netlink().LinkByName(l.ClientVeth())
	if err != nil {
		t.Fatal(err)
	}
	neighs, err := l.Client().Netlink().NeighList(link.Attrs().Index, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		if n.IP.Equal(net.ParseIP(ip)) {
			if n.State != netlink.NUD_PERMANENT || n.HardwareAddr.String() != BlackholeMAC {
				t.Errorf("neighbour %s: state %#x lladdr %s, want permanent %s", ip, n.State, n.HardwareAddr, BlackholeMAC)
			}
			return
		}
	}
	t.Errorf("no neighbour entry for %s on %s", ip, l.ClientVeth())
}

func vethTxPackets(t testing.TB, l *Lab) uint64 {
	t.Helper()
	link, err := l.Client().Netlink().LinkByName(l.ClientVeth())
	if err != nil {
		t.Fatal(err)
	}
	return link.Attrs().Statistics.TxPackets
}

func TestDial_UDPExchangesDatagramsWithServer(t *testing.T) {
	l := newTestLab(t)
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			pc, err := l.Server().ListenPacket("udp", net.JoinHostPort(fam.server, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			c, err := l.Client().DialContext(testContext(t, 5*time.Second), "udp", pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, ok := c.(*net.UDPConn); !ok {
				t.Errorf("conn is %T, want *net.UDPConn", c)
			}
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			pc.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, from, err := pc.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("server read %q, %v", buf[:n], err)
			}
			if _, err := pc.WriteTo([]byte("world"), from); err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if n, err = c.Read(buf); err != nil || string(buf[:n]) != "world" {
				t.Fatalf("client read %q, %v", buf[:n], err)
			}
		})
	}
}

func TestDialer_AppliesMarkAndLocalAddr(t *testing.T) {
	l := newTestLab(t)
	addr := listenEcho(t, l, ServerAddr4)
	local := netip.MustParseAddrPort(ClientVethAddr4 + ":0")
	d := &Dialer{NS: l.Client(), Mark: Fwmark, LocalAddr: local}
	c, err := d.DialContext(testContext(t, 5*time.Second), "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := socketMark(t, c.(syscall.Conn)); got != Fwmark {
		t.Errorf("SO_MARK = %d, want %d", got, Fwmark)
	}
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != local.Addr() {
		t.Errorf("LocalAddr = %s, want %s", got, local.Addr())
	}
	assertEcho(t, c)

	mismatch := &Dialer{NS: l.Client(), LocalAddr: netip.MustParseAddrPort("[" + ClientVethAddr6 + "]:0")}
	if c, err := mismatch.DialContext(testContext(t, 5*time.Second), "tcp", addr); err == nil {
		c.Close()
		t.Error("dial with an IPv6 local address to an IPv4 server succeeded")
	}
}

func socketMark(t testing.TB, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		mark, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return mark
}

// Policy routing by socket owner, for TestDialAsUID: sockets of uidRouted
// look up uidTable, where the servers are unreachable.
const (
	uidRouted   = 4242
	uidTable    = 4242
	uidPriority = 50
)

// blockServersForUID makes C's servers unreachable for sockets owned by uid
// only: "uidrange uid-uid lookup uidTable" with unreachable host routes to
// ServerAddr4 and ServerAddr6 in that table. The Lab's Close removes them.
func blockServersForUID(t testing.TB, l *Lab, uid uint32) {
	t.Helper()
	h := l.Client().Netlink()
	for _, fam := range []struct {
		family int
		dst    string
	}{{netlink.FAMILY_V4, ServerAddr4 + "/32"}, {netlink.FAMILY_V6, ServerAddr6 + "/128"}} {
		_, dst, err := net.ParseCIDR(fam.dst)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.RouteAdd(&netlink.Route{Dst: dst, Table: uidTable, Type: unix.RTN_UNREACHABLE}); err != nil {
			t.Fatalf("unreachable %s table %d: %v", fam.dst, uidTable, err)
		}
		r := netlink.NewRule()
		r.Family = fam.family
		r.Priority = uidPriority
		r.Table = uidTable
		r.UIDRange = netlink.NewRuleUIDRange(uid, uid)
		if err := h.RuleAdd(r); err != nil {
			t.Fatalf("add rule %s: %v", r, err)
		}
	}
}

func TestDialAsUID_SocketIsOwnedByUIDForPolicyRouting(t *testing.T) {
	l := newTestLab(t)
	blockServersForUID(t, l, uidRouted)
	for _, fam := range families() {
		t.Run(fam.name, func(t *testing.T) {
			ctx := testContext(t, 5*time.Second)
			addrs := map[string]string{
				"tcp": listenEcho(t, l, fam.server),
				"udp": net.JoinHostPort(fam.server, "9"),
			}
			for _, proto := range []string{"tcp", "udp"} {
				network, addr := proto+fam.digit, addrs[proto]
				c, err := l.Client().DialAsUID(ctx, uidRouted, network, addr)
				if err == nil {
					c.Close()
					t.Fatalf("DialAsUID(%d, %s, %s) succeeded despite the uidrange rule", uidRouted, network, addr)
				}
				// An unreachable route answers EHOSTUNREACH in both families.
				var opErr *net.OpError
				if !errors.Is(err, syscall.EHOSTUNREACH) || !errors.As(err, &opErr) || opErr.Op != "dial" {
					t.Errorf("DialAsUID(%d, %s, %s) = %v, want a dial *net.OpError with EHOSTUNREACH", uidRouted, network, addr, err)
				}

				// Neither another uid nor the process's own (root) is routed
				// by the rule.
				other, err := l.Client().DialAsUID(ctx, uidRouted+1, proto, addr)
				if err != nil {
					t.Fatalf("DialAsUID(%d, %s, %s): %v", uidRouted+1, proto, addr, err)
				}
				defer other.Close()
				own, err := l.Client().DialContext(ctx, network, addr)
				if err != nil {
					t.Fatalf("DialContext(%s, %s) after DialAsUID: %v", network, addr, err)
				}
				defer own.Close()
				if proto == "tcp" {
					if _, ok := other.(*net.TCPConn); !ok {
						t.Errorf("conn is %T, want *net.TCPConn", other)
					}
					assertEcho(t, other)
					assertEcho(t, own)
				} else if _, ok := other.(*net.UDPConn); !ok {
					t.Errorf("conn is %T, want *net.UDPConn", other)
				}
			}
		})
	}
}

func TestDialAsUID_RejectsInvalidUIDAndNetwork(t *testing.T) {
	l := newTestLab(t)
	ctx := testContext(t, 5*time.Second)
	addr := listenEcho(t, l, ServerAddr4)
	if c, err := l.Client().DialAsUID(ctx, math.MaxUint32, "tcp", addr); err == nil {
		c.Close()
		t.Error("DialAsUID with uid (uid_t)-1 succeeded")
	}
	if c, err := l.Client().DialAsUID(ctx, 1000, "ip4", addr); err == nil {
		c.Close()
		t.Error(`DialAsUID over network "ip4" succeeded`)
	}
}

func TestDial_ManyConcurrentDialsSucceed(t *testing.T) {
	l := newTestLab(t)
	addr := listenEcho(t, l, ServerAddr4)
	ctx := testContext(t, 10*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Go(func() {
			c, err := l.Client().DialContext(ctx, "tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestParseTarget_AcceptsIPLiteralsOnly(t *testing.T) {
	good := []struct{ network, addr string }{
		{"tcp", "198.19.0.2:80"}, {"tcp4", "198.19.0.2:80"}, {"tcp6", "[2001:2:0:1::2]:80"},
		{"udp", "[2001:2:0:1::2]:53"}, {"tcp", "[::ffff:198.19.0.2]:80"},
	}
	for _, c := range good {
		if _, err := parseTarget(c.network, c.addr); err != nil {
			t.Errorf("parseTarget(%q, %q) = %v", c.network, c.addr, err)
		}
	}
	bad := []struct{ network, addr string }{
		{"tcp", "localhost:80"}, {"tcp4", "[2001:2:0:1::2]:80"}, {"udp6", "198.19.0.2:53"},
		{"ip4", "198.19.0.2:0"}, {"tcp", "198.19.0.2"},
	}
	for _, c := range bad {
		if _, err := parseTarget(c.network, c.addr); err == nil {
			t.Errorf("parseTarget(%q, %q) accepted", c.network, c.addr)
		}
	}
	if tg, _ := parseTarget("tcp", "[::ffff:198.19.0.2]:80"); tg.kind() != kindTCP4 {
		t.Error("IPv4-mapped address not dialled over AF_INET")
	}
}

// BenchmarkDial measures connection setup from C to a server in S, the
// load-generator path of `gateway bench`.
func BenchmarkDial(b *testing.B) {
	l := newTestLab(b)
	ln, err := l.Server().Listen("tcp", ServerAddr4+":0")
	if err != nil {
		b.Fatal(err)
	}
	serveEcho(b, ln)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := l.Client().DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				b.Error(err)
				return
			}
			c.Close()
		}
	})
}
