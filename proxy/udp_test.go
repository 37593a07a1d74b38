package proxy_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/proxy/proxytest"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest"
)

// serveUDP answers every datagram on a fresh 127.0.0.1 socket with
// answer(datagram), until the test ends.
func serveUDP(t *testing.T, answer func([]byte) []byte) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if reply := answer(buf[:n]); reply != nil {
				c.WriteToUDP(reply, from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c
}

func echo(b []byte) []byte { return b }

// forEachNAT runs test once per NAT mode.
func forEachNAT(t *testing.T, test func(t *testing.T, nat proxy.NATMode)) {
	for _, nat := range []proxy.NATMode{proxy.NATFullCone, proxy.NATSymmetric} {
		t.Run(nat.String(), func(t *testing.T) { test(t, nat) })
	}
}

// handleUDP runs HandleUDP for a flow to dst whose first datagram is
// first; it returns the app's socket and the handler's done channel.
func (h *harness) handleUDP(dst string, first []byte) (*net.UDPConn, <-chan struct{}) {
	h.t.Helper()
	st, app := proxytest.NewPacketConnPair(h.t, flowTo(h.t, dst))
	if _, err := app.Write(first); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	h.wg.Go(func() {
		defer close(done)
		h.p.HandleUDP(context.Background(), st)
	})
	return app, done
}

func readDatagram(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 64<<10)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read datagram: %v", err)
	}
	return buf[:n]
}

func TestHandleUDP_RelaysDatagramsBothWays(t *testing.T) {
	forEachNAT(t, func(t *testing.T, nat proxy.NATMode) {
		srv := serveUDP(t, echo)
		h := newHarness(t, proxy.Options{UDPNAT: nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
		app, done := h.handleUDP(srv.LocalAddr().String(), []byte("first"))
		if got := readDatagram(t, app); string(got) != "first" {
			t.Fatalf("echo %q, want the first datagram", got)
		}
		big := make([]byte, 60000)
		big[59999] = 7
		for _, msg := range [][]byte{[]byte("second"), {}, big} {
			app.Write(msg)
			if got := readDatagram(t, app); len(got) != len(msg) || (len(msg) > 0 && got[len(got)-1] != msg[len(msg)-1]) {
				t.Fatalf("echo of %d bytes came back as %d bytes", len(msg), len(got))
			}
		}
		assertOpen(t, done, "session end")
		// The relay counts a datagram after passing it on, so the counters
		// may trail the echo the app already read.
		stacktest.Eventually(t, "datagram counters", func() bool {
			s := h.p.Stats()
			return s.UDPSessions == 1 && s.UDPActive == 1 && s.UDPPacketsUp == 4 && s.UDPPacketsDown == 4 &&
				s.UDPBytesUp == uint64(len("first")+len("second")+len(big)) && s.UDPBytesDown == s.UDPBytesUp
		})
	})
}

// dnsAnswer answers A queries for svc.test. with 198.18.0.53.
func dnsAnswer(t *testing.T) func([]byte) []byte {
	return func(q []byte) []byte {
		var m dnsmessage.Message
		if err := m.Unpack(q); err != nil || len(m.Questions) != 1 {
			t.Errorf("bad DNS query: %v", err)
			return nil
		}
		m.Header.Response = true
		m.Answers = []dnsmessage.Resource{{
			Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.AResource{A: [4]byte{198, 18, 0, 53}},
		}}
		b, err := m.Pack()
		if err != nil {
			t.Errorf("pack DNS answer: %v", err)
		}
		return b
	}
}

func TestHandleUDP_ResolvesDNSThroughSession(t *testing.T) {
	forEachNAT(t, func(t *testing.T, nat proxy.NATMode) {
		srv := serveUDP(t, dnsAnswer(t))
		h := newHarness(t, proxy.Options{UDPNAT: nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
		q := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: 0x4242, RecursionDesired: true},
			Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("svc.test."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
		}
		query, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		app, _ := h.handleUDP(srv.LocalAddr().String(), query)
		var resp dnsmessage.Message
		if err := resp.Unpack(readDatagram(t, app)); err != nil {
			t.Fatal(err)
		}
		if resp.ID != 0x4242 || len(resp.Answers) != 1 {
			t.Fatalf("response %+v, want one answer to query 0x4242", resp)
		}
		if a := resp.Answers[0].Body.(*dnsmessage.AResource).A; netip.AddrFrom4(a) != netip.MustParseAddr("198.18.0.53") {
			t.Fatalf("answer %v", a)
		}
	})
}

func TestHandleUDP_IdleTimeoutEndsSession(t *testing.T) {
	forEachNAT(t, func(t *testing.T, nat proxy.NATMode) {
		const idle = 30 * time.Second
		srv := serveUDP(t, echo)
		h := newHarness(t, proxy.Options{UDPNAT: nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{}), UDPIdleTimeout: idle})
		app, done := h.handleUDP(srv.LocalAddr().String(), []byte("ping"))
		readDatagram(t, app) // the session runs, its timer is armed

		h.clock.Advance(idle - time.Second)
		app.Write([]byte("activity"))
		readDatagram(t, app)
		h.clock.Advance(2 * time.Second)
		assertOpen(t, done, "session end despite recent activity")

		h.clock.Advance(idle)
		waitClosed(t, done, "session end")
		if s := h.p.Stats(); s.UDPActive != 0 || s.UDPSessions != 1 {
			t.Fatalf("stats = %+v, want one finished session", s)
		}
	})
}

func TestHandleUDP_SurvivesPortUnreachable(t *testing.T) {
	forEachNAT(t, func(t *testing.T, nat proxy.NATMode) {
		// A destination port that is closed at first and opens later, like a
		// DNS server restarting.
		tmp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		dst := tmp.LocalAddr().(*net.UDPAddr)
		tmp.Close()
		h := newHarness(t, proxy.Options{UDPNAT: nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
		app, done := h.handleUDP(dst.String(), []byte("lost: nobody listens"))
		stacktest.Eventually(t, "the ICMP port unreachable", func() bool { return h.p.Stats().UDPPortUnreachable > 0 })

		serveUDPOn(t, dst)
		for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); {
			app.Write([]byte("hello again"))
			app.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			buf := make([]byte, 100)
			if n, err := app.Read(buf); err == nil && string(buf[:n]) == "hello again" {
				assertOpen(t, done, "session end")
				return
			}
		}
		t.Fatal("no echo after the destination came back")
	})
}

// serveUDPOn echoes datagrams on addr until the test ends.
func serveUDPOn(t *testing.T, addr *net.UDPAddr) {
	t.Helper()
	c, err := net.ListenUDP("udp", addr)
	if err != nil {
		t.Skipf("port %d was taken meanwhile: %v", addr.Port, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
}

func TestHandleUDP_WithoutUDPDialerDropsFlow(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	_, done := h.handleUDP("127.0.0.1:53", []byte("query"))
	waitClosed(t, done, "handler")
	if s := h.p.Stats(); s.UDPDropped != 1 || s.UDPSessions != 0 {
		t.Fatalf("stats = %+v, want one dropped flow", s)
	}
}

func TestHandleUDP_PolicyRefusalDropsFlow(t *testing.T) {
	srv := serveUDP(t, echo)
	h := newHarness(t, proxy.Options{
		UDPDialer: proxy.NewDirect(proxy.DirectOptions{}),
		Policy:    func(id stack.FlowID) error { return errors.New("no UDP today") },
	})
	_, done := h.handleUDP(srv.LocalAddr().String(), []byte("query"))
	waitClosed(t, done, "handler")
	if s := h.p.Stats(); s.UDPDropped != 1 || s.UDPSessions != 0 {
		t.Fatalf("stats = %+v, want one dropped flow", s)
	}
}

func TestClose_EndsUDPSessionsAndWaits(t *testing.T) {
	forEachNAT(t, func(t *testing.T, nat proxy.NATMode) {
		srv := serveUDP(t, echo)
		h := newHarness(t, proxy.Options{UDPNAT: nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
		app, _ := h.handleUDP(srv.LocalAddr().String(), []byte("ping"))
		readDatagram(t, app)
		h.p.Close()
		if s := h.p.Stats(); s.UDPActive != 0 {
			t.Fatalf("%d sessions active after Close", s.UDPActive)
		}
	})
}
