package udp_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest"
	"github.com/tungate/tungate/stack/udp"
)

// echoServer answers every datagram on a fresh 127.0.0.1 socket with the
// datagram itself, until the test ends.
func echoServer(t *testing.T) netip.AddrPort {
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
			c.WriteToUDP(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestProxy_DatagramRoundTripsThroughTheUpstream wires the Table to the real
// proxy: the app's datagram to the echo server's address becomes a flow,
// the proxy relays it over a kernel UDP socket on loopback, and the echo
// comes back as a reply packet from the server's address to the app.
func TestProxy_DatagramRoundTripsThroughTheUpstream(t *testing.T) {
	srv := echoServer(t)
	p := proxy.New(proxy.Options{UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
	w := &capture{}
	tab := udp.New(w, p, udp.Options{})
	defer p.Close()
	defer tab.Close()

	flow := stack.FlowID{Src: app4, Dst: srv}
	for _, msg := range []string{"hello", "again"} {
		tab.Deliver(udpPacket(t, flow, []byte(msg)))
		var pkts [][]byte
		stacktest.Eventually(t, "the echo of "+msg+" comes back", func() bool {
			pkts = w.packets()
			return len(pkts) > 0
		})
		reply, err := packet.ParseIP(pkts[len(pkts)-1])
		if err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if reply.SrcAddrPort() != srv || reply.DstAddrPort() != app4 || string(reply.Payload) != msg {
			t.Errorf("reply %v -> %v %q, want %v -> %v %q",
				reply.SrcAddrPort(), reply.DstAddrPort(), reply.Payload, srv, app4, msg)
		}
		w.mu.Lock()
		w.pkts = nil
		w.mu.Unlock()
	}
	if s := tab.Stats(); s.Flows != 1 || s.DatagramsIn != 2 || s.DatagramsOut != 2 {
		t.Errorf("Table stats = %+v, want one flow carrying 2 datagrams each way", s)
	}
	if s := p.Stats(); s.UDPSessions != 1 {
		t.Errorf("proxy UDPSessions = %d, want 1", s.UDPSessions)
	}

	closed := make(chan struct{})
	go func() {
		tab.Close() // ends the session: the proxy's HandleUDP returns
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(waitLimit):
		t.Fatal("Table.Close did not return: the proxy's handler kept running")
	}
}
