package proxy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest"
)

// udpSOCKS is a SOCKS5 server that serves UDP ASSOCIATE only (RFC 1928
// §7): one relay socket per association, replied as 0.0.0.0:port (so the
// client must use the server's address), closed with the control
// connection. It relays datagrams to their destination and back, the name
// "echo.test" meaning echo; with a spoiler it first sends the client a
// fragment and a malformed datagram before each real reply.
type udpSOCKS struct {
	t       *testing.T
	ln      *net.TCPListener
	echo    netip.AddrPort
	spoiler bool

	mu    sync.Mutex
	dsts  []string   // destinations as the requests named them
	ctrls []net.Conn // control connections, for the test to close
	wg    sync.WaitGroup
}

func startUDPSOCKS(t *testing.T, echoAddr netip.AddrPort, spoiler bool) *udpSOCKS {
	s := &udpSOCKS{t: t, ln: listenTCP(t), echo: echoAddr, spoiler: spoiler}
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.ctrls = append(s.ctrls, c)
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				s.serve(c)
			})
		}
	})
	t.Cleanup(func() {
		s.ln.Close()
		s.closeControls()
		s.wg.Wait()
	})
	return s
}

func (s *udpSOCKS) closeControls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.ctrls {
		c.Close()
	}
}

func (s *udpSOCKS) destinations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.dsts...)
}

func (s *udpSOCKS) serve(c net.Conn) {
	buf := make([]byte, 262)
	// Greeting: VER NMETHODS METHODS; choose no authentication.
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		return
	}
	if _, err := io.ReadFull(c, buf[:buf[1]]); err != nil {
		return
	}
	c.Write([]byte{5, 0})
	// Request: VER CMD RSV ATYP 0.0.0.0 0.
	if _, err := io.ReadFull(c, buf[:10]); err != nil || buf[1] != 3 || buf[3] != 1 {
		c.Write([]byte{5, 7, 0, 1, 0, 0, 0, 0, 0, 0}) // command not supported
		return
	}
	relay, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return
	}
	defer relay.Close()
	reply := []byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(reply[8:], uint16(relay.LocalAddr().(*net.UDPAddr).Port))
	c.Write(reply)
	go func() {
		io.Copy(io.Discard, c) // the association ends with the control connection
		relay.Close()
	}()
	pkt := make([]byte, 65536)
	for {
		n, client, err := relay.ReadFromUDPAddrPort(pkt)
		if err != nil {
			return
		}
		dst, data, ok := s.parse(pkt[:n])
		if !ok {
			continue
		}
		// Only echo destinations: the test's echo server, by name or
		// address. The reply names the echo server as its source.
		if dst != "echo.test:"+itoa(s.echo.Port()) && dst != s.echo.String() {
			continue
		}
		if s.spoiler {
			relay.WriteToUDPAddrPort(append([]byte{0, 0, 1, 1, 127, 0, 0, 1, 0, 7}, "fragment"...), client)
			relay.WriteToUDPAddrPort([]byte{0, 0, 0}, client)
		}
		a := s.echo.Addr().As4()
		out := append([]byte{0, 0, 0, 1}, a[:]...)
		out = binary.BigEndian.AppendUint16(out, s.echo.Port())
		relay.WriteToUDPAddrPort(append(out, data...), client)
	}
}

// parse reads a UDP request header and records the destination.
func (s *udpSOCKS) parse(p []byte) (dst string, data []byte, ok bool) {
	if len(p) < 4 || p[2] != 0 {
		return "", nil, false
	}
	var host string
	i := 4
	switch p[3] {
	case 1:
		ip, _ := netip.AddrFromSlice(p[4:8])
		host, i = ip.String(), 8
	case 4:
		ip, _ := netip.AddrFromSlice(p[4:20])
		host, i = "["+ip.String()+"]", 20
	case 3:
		l := int(p[4])
		host, i = string(p[5:5+l]), 5+l
	default:
		return "", nil, false
	}
	dst = host + ":" + itoa(binary.BigEndian.Uint16(p[i:]))
	s.mu.Lock()
	s.dsts = append(s.dsts, dst)
	s.mu.Unlock()
	return dst, p[i+2:], true
}

func itoa(v uint16) string { return strconv.Itoa(int(v)) }

func TestSOCKS5UDP_RelaysDatagramsThroughTheAssociation(t *testing.T) {
	echoSrv := serveUDP(t, echo)
	echoAddr := echoSrv.LocalAddr().(*net.UDPAddr).AddrPort()
	srv := startUDPSOCKS(t, echoAddr, false)
	d := proxy.NewSOCKS5(srv.ln.Addr().String(), "", "", nil).(proxy.PacketDialer)
	up, err := d.ListenPacket(context.Background(), nil)
	if err != nil {
		t.Fatalf("ListenPacket: %v", err)
	}
	defer up.Close()
	for _, target := range []string{echoAddr.String(), "echo.test:" + itoa(echoAddr.Port())} {
		dst, err := up.Resolve(context.Background(), target)
		if err != nil {
			t.Fatal(err)
		}
		if err := up.WriteTo([]byte("via "+target), dst); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
		buf := make([]byte, 1500)
		n, from, err := up.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "via "+target || from != echoAddr {
			t.Fatalf("ReadFrom = %q from %v, %v; want the echo from %v", buf[:n], from, err, echoAddr)
		}
	}
	if got := srv.destinations(); len(got) != 2 || got[1] != "echo.test:"+itoa(echoAddr.Port()) {
		t.Errorf("the server saw destinations %q, want the address, then the name", got)
	}
}

func TestSOCKS5UDP_DropsFragmentsAndMalformedReplies(t *testing.T) {
	echoSrv := serveUDP(t, echo)
	echoAddr := echoSrv.LocalAddr().(*net.UDPAddr).AddrPort()
	srv := startUDPSOCKS(t, echoAddr, true)
	socks := proxy.NewSOCKS5(srv.ln.Addr().String(), "", "", nil)
	h := newHarness(t, proxy.Options{Router: func(stack.FlowID, string) proxy.Route {
		return proxy.Route{Outbound: "socks", Rule: -1, Action: proxy.ActionDial, Dialer: socks}
	}})
	_, sock, done := h.handleFlow(appAddr, echoAddr.String(), []byte("game state"))
	if got := readDatagram(t, sock); string(got) != "game state" {
		t.Fatalf("the app got %q, want the echo and nothing of the spoilers", got)
	}
	stacktest.Eventually(t, "drop counters", func() bool {
		s := h.p.Stats()
		return s.UDPFragmentsDropped == 1 && s.UDPMalformedDropped == 1
	})
	// The association lives as long as its control connection.
	srv.closeControls()
	waitClosed(t, done, "session end after the server closed the control connection")
}

func TestSOCKS5UDP_SymmetricSessionUsesItsOwnAssociation(t *testing.T) {
	echoSrv := serveUDP(t, echo)
	echoAddr := echoSrv.LocalAddr().(*net.UDPAddr).AddrPort()
	srv := startUDPSOCKS(t, echoAddr, true)
	socks := proxy.NewSOCKS5(srv.ln.Addr().String(), "", "", nil)
	h := newHarness(t, proxy.Options{UDPNAT: proxy.NATSymmetric, Router: func(stack.FlowID, string) proxy.Route {
		return proxy.Route{Outbound: "socks", Rule: -1, Action: proxy.ActionDial, Dialer: socks}
	}})
	_, sock, _ := h.handleFlow(appAddr, echoAddr.String(), []byte("hello"))
	if got := readDatagram(t, sock); string(got) != "hello" {
		t.Fatalf("the app got %q, want the echo", got)
	}
}

func TestSOCKS5UDP_RefusedAssociateFailsListenPacket(t *testing.T) {
	srv := startSOCKS(t, &socksServer{}) // CONNECT only: it drops ASSOCIATE
	d := proxy.NewSOCKS5(srv.addr(), "", "", nil).(proxy.PacketDialer)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if up, err := d.ListenPacket(ctx, nil); err == nil {
		up.Close()
		t.Fatal("ListenPacket succeeded against a server without UDP ASSOCIATE")
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ListenPacket hung: %v", err)
	}
}
