package proxy_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/proxy/proxytest"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest"
)

// mirror answers every datagram with the address it came from, as a STUN
// server reports the mapped address.
func mirror(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(from.String()), from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c
}

// handleFlow runs HandleUDP for the flow app → dst with a first datagram
// and returns the stack's side (for WriteFrom records), the app's socket
// and the handler's done channel.
func (h *harness) handleFlow(app netip.AddrPort, dst string, first []byte) (*proxytest.PacketConn, *net.UDPConn, <-chan struct{}) {
	h.t.Helper()
	id := flowTo(h.t, dst)
	id.Src = app
	st, sock := proxytest.NewPacketConnPair(h.t, id)
	if _, err := sock.Write(first); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	h.wg.Go(func() {
		defer close(done)
		h.p.HandleUDP(context.Background(), st)
	})
	return st, sock, done
}

func TestCone_OneUpstreamSocketForEveryDestination(t *testing.T) {
	a, b := mirror(t), mirror(t)
	for _, tc := range []struct {
		nat  proxy.NATMode
		same bool
	}{{proxy.NATFullCone, true}, {proxy.NATSymmetric, false}} {
		t.Run(tc.nat.String(), func(t *testing.T) {
			h := newHarness(t, proxy.Options{UDPNAT: tc.nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
			_, toA, _ := h.handleFlow(appAddr, a.LocalAddr().String(), []byte("mapped?"))
			_, toB, _ := h.handleFlow(appAddr, b.LocalAddr().String(), []byte("mapped?"))
			mappedA, mappedB := string(readDatagram(t, toA)), string(readDatagram(t, toB))
			if (mappedA == mappedB) != tc.same {
				t.Fatalf("server A saw %s, server B saw %s; want the same mapping: %v", mappedA, mappedB, tc.same)
			}
			wantSessions := map[bool]uint64{true: 1, false: 2}[tc.same]
			if s := h.p.Stats(); s.UDPSessions != wantSessions || s.UDPFlows != 2 {
				t.Errorf("sessions %d flows %d, want %d and 2", s.UDPSessions, s.UDPFlows, wantSessions)
			}
		})
	}
}

func TestCone_DatagramFromAnyRemoteReachesTheApp(t *testing.T) {
	a := mirror(t)
	h := newHarness(t, proxy.Options{UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
	st, sock, _ := h.handleFlow(appAddr, a.LocalAddr().String(), []byte("mapped?"))
	mapped, err := netip.ParseAddrPort(string(readDatagram(t, sock)))
	if err != nil {
		t.Fatal(err)
	}
	// A remote the app never sent to sends to the mapped address.
	stranger, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if _, err := stranger.WriteToUDPAddrPort([]byte("hello from elsewhere"), mapped); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-st.Froms():
		if d.From != stranger.LocalAddr().(*net.UDPAddr).AddrPort() || string(d.Payload) != "hello from elsewhere" {
			t.Fatalf("the app got %q from %v, want the stranger's datagram from %v", d.Payload, d.From, stranger.LocalAddr())
		}
	case <-time.After(waitLimit):
		t.Fatal("the stranger's datagram did not reach the app")
	}
	if s := h.p.Stats(); s.UDPUnsolicited != 1 {
		t.Errorf("UDPUnsolicited = %d, want 1", s.UDPUnsolicited)
	}
}

func TestUDP_UpstreamPortUnreachableReachesTheApp(t *testing.T) {
	forEachNAT(t, func(t *testing.T, nat proxy.NATMode) {
		dst := closedUDPPort(t)
		h := newHarness(t, proxy.Options{UDPNAT: nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
		st, sock, done := h.handleFlow(appAddr, dst.String(), []byte("anyone?"))
		for deadline := time.After(waitLimit); ; {
			select {
			case got := <-st.Unreachable():
				if got != dst {
					t.Fatalf("port unreachable from %v, want %v", got, dst)
				}
				assertOpen(t, done, "session end")
				// Counted after it is sent.
				stacktest.Eventually(t, "UDPUnreachableToApp", func() bool { return h.p.Stats().UDPUnreachableToApp > 0 })
				return
			case <-deadline:
				t.Fatal("no port unreachable reached the app")
			case <-time.After(50 * time.Millisecond):
				sock.Write([]byte("anyone?")) // the first may have raced the session's start
			}
		}
	})
}

// closedUDPPort is a 127.0.0.1 port nothing listens on.
func closedUDPPort(t *testing.T) netip.AddrPort {
	tmp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tmp.Close()
	return tmp.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestUDP_MaxSessionsEvictsTheLeastRecentlyUsed(t *testing.T) {
	forEachNAT(t, func(t *testing.T, nat proxy.NATMode) {
		srv := serveUDP(t, echo)
		h := newHarness(t, proxy.Options{UDPNAT: nat, MaxUDPSessions: 2, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
		app := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(appAddr.Addr(), port) }
		_, s1, done1 := h.handleFlow(app(1), srv.LocalAddr().String(), []byte("one"))
		readDatagram(t, s1)
		h.clock.Advance(2 * time.Second)
		_, s2, done2 := h.handleFlow(app(2), srv.LocalAddr().String(), []byte("two"))
		readDatagram(t, s2)
		h.clock.Advance(2 * time.Second)
		// The first is used again: the second is now the least recent.
		s1.Write([]byte("one again"))
		readDatagram(t, s1)
		_, s3, done3 := h.handleFlow(app(3), srv.LocalAddr().String(), []byte("three"))
		readDatagram(t, s3)
		waitClosed(t, done2, "the least recently used session")
		assertOpen(t, done1, "a recently used session")
		assertOpen(t, done3, "the new session")
		if s := h.p.Stats(); s.UDPEvicted != 1 || s.UDPActive != 2 {
			t.Errorf("evicted %d active %d, want 1 and 2", s.UDPEvicted, s.UDPActive)
		}
	})
}

func TestUDP_OutboundWithoutUDPRefusesTheFlow(t *testing.T) {
	h := newHarness(t, proxy.Options{Router: func(stack.FlowID, string) proxy.Route {
		return proxy.Route{Outbound: "http-proxy", Rule: -1, Action: proxy.ActionDial}
	}})
	st, _, done := h.handleFlow(appAddr, "127.0.0.1:443", []byte("quic"))
	waitClosed(t, done, "handler")
	if !st.Refused() {
		t.Error("the flow was not refused (no ICMP port unreachable to the app)")
	}
	if s := h.p.Stats(); s.UDPRefused != 1 || s.UDPSessions != 0 {
		t.Errorf("refused %d sessions %d, want 1 and 0", s.UDPRefused, s.UDPSessions)
	}
}

// namedUpstream is a PacketUpstream that keeps names for a proxy to
// resolve, like a SOCKS5 association; replies are injected by the test.
type namedUpstream struct {
	sent    chan proxy.Destination
	replies chan namedReply
	closed  chan struct{}
}

type namedReply struct {
	from netip.AddrPort
	data string
}

func (u *namedUpstream) ListenPacket(context.Context, func(netip.AddrPort)) (proxy.PacketUpstream, error) {
	return u, nil
}
func (u *namedUpstream) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("not used")
}
func (u *namedUpstream) Resolve(_ context.Context, address string) (proxy.Destination, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return proxy.Destination{}, err
	}
	p, _ := netip.ParseAddrPort("0.0.0.0:" + port)
	return proxy.Destination{Name: host, Port: p.Port()}, nil
}
func (u *namedUpstream) WriteTo(b []byte, d proxy.Destination) error {
	u.sent <- d
	return nil
}
func (u *namedUpstream) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case r := <-u.replies:
		return copy(b, r.data), r.from, nil
	case <-u.closed:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}
func (u *namedUpstream) LocalAddr() net.Addr { return nil }
func (u *namedUpstream) Close() error {
	select {
	case <-u.closed:
	default:
		close(u.closed)
	}
	return nil
}

func TestCone_ReplyToANameTheProxyResolvedReachesItsFlow(t *testing.T) {
	up := &namedUpstream{sent: make(chan proxy.Destination, 4), replies: make(chan namedReply, 4), closed: make(chan struct{})}
	fake := "198.18.77.7:443"
	h := newHarness(t, proxy.Options{Router: func(id stack.FlowID, _ string) proxy.Route {
		return proxy.Route{Outbound: "socks", Rule: -1, Action: proxy.ActionDial, Dialer: up, Address: "quic.example:443"}
	}})
	st, _, _ := h.handleFlow(appAddr, fake, []byte("initial"))
	select {
	case d := <-up.sent:
		if d.Name != "quic.example" || d.Port != 443 || d.Addr.IsValid() {
			t.Fatalf("sent to %+v, want the name for the proxy to resolve", d)
		}
	case <-time.After(waitLimit):
		t.Fatal("nothing sent upstream")
	}
	// The proxy resolved the name to 192.0.2.9 (never dialed: the
	// upstream is a fake); the reply must reach the app from the fake
	// address it sent to, through the flow.
	up.replies <- namedReply{from: netip.MustParseAddrPort("192.0.2.9:443"), data: "handshake"}
	stacktest.Eventually(t, "the reply", func() bool { return h.p.Stats().UDPPacketsDown == 1 })
	select {
	case d := <-st.Froms():
		t.Fatalf("the reply reached the app from %v, not from the fake address %s", d.From, fake)
	default:
	}
	if s := h.p.Stats(); s.UDPUnsolicited != 0 {
		t.Errorf("UDPUnsolicited = %d", s.UDPUnsolicited)
	}
}

// gatedDialer is a PacketDialer whose ListenPacket waits for gate and
// returns upstreams the test can inspect.
type gatedDialer struct {
	entered chan struct{}
	gate    chan struct{}
	ups     chan *namedUpstream
}

func (d *gatedDialer) ListenPacket(ctx context.Context, _ func(netip.AddrPort)) (proxy.PacketUpstream, error) {
	// An open the test does not expect (a flow reopening its evicted
	// session) must not hold Proxy.Close in the cleanup forever.
	select {
	case d.entered <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-d.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	u := &namedUpstream{sent: make(chan proxy.Destination, 4), replies: make(chan namedReply), closed: make(chan struct{})}
	d.ups <- u
	return u, nil
}
func (d *gatedDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("not used")
}

func TestCone_SessionEvictedWhileOpeningClosesItsUpstream(t *testing.T) {
	d := &gatedDialer{entered: make(chan struct{}, 2), gate: make(chan struct{}), ups: make(chan *namedUpstream, 2)}
	h := newHarness(t, proxy.Options{MaxUDPSessions: 1, Router: func(stack.FlowID, string) proxy.Route {
		return proxy.Route{Outbound: "gated", Rule: -1, Action: proxy.ActionDial, Dialer: d}
	}})
	_, _, doneA := h.handleFlow(netip.AddrPortFrom(appAddr.Addr(), 1), "127.0.0.1:9", []byte("a"))
	<-d.entered // A's session is in the table, opening
	// B's session takes the only place: A, still opening, is evicted.
	_, _, _ = h.handleFlow(netip.AddrPortFrom(appAddr.Addr(), 2), "127.0.0.1:9", []byte("b"))
	<-d.entered
	if s := h.p.Stats(); s.UDPEvicted != 1 {
		t.Fatalf("UDPEvicted = %d, want 1", s.UDPEvicted)
	}
	d.gate <- struct{}{} // one of the two opens finishes
	d.gate <- struct{}{} // and the other
	first, second := <-d.ups, <-d.ups
	waitClosed(t, doneA, "A's handler")
	closed := func(u *namedUpstream) bool {
		select {
		case <-u.closed:
			return true
		default:
			return false
		}
	}
	if closed(first) == closed(second) {
		t.Fatalf("upstreams closed: %v, %v; want exactly the evicted session's closed", closed(first), closed(second))
	}
	if s := h.p.Stats(); s.UDPActive != 1 {
		t.Errorf("UDPActive = %d, want 1 (B)", s.UDPActive)
	}
}
