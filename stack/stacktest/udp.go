package stacktest

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// runUDP runs the UDP contract tests.
func runUDP(t *testing.T, newStack NewStack) {
	t.Run("WriteFromSendsFromAnySource", func(t *testing.T) { writeFrom(t, newStack) })
	t.Run("PortUnreachableQuotesTheDestination", func(t *testing.T) { portUnreachable(t, newStack) })
}

// udpHandler hands every new UDP flow to conns; TCP flows are refused.
type udpHandler chan stack.PacketConn

func (h udpHandler) HandleTCP(_ context.Context, r stack.Request) { r.Reject(true) }
func (h udpHandler) HandleUDP(ctx context.Context, c stack.PacketConn) {
	h <- c
	<-ctx.Done()
}

// udpFlow starts a stack, sends one datagram app → dst and returns the
// flow's PacketConn, which must be a stack.DatagramWriter.
func udpFlow(t *testing.T, newStack NewStack, dst netip.AddrPort) (stack.DatagramWriter, *writer) {
	t.Helper()
	h := make(udpHandler, 1)
	s, w := start(t, newStack, h)
	b := make([]byte, 100)
	n, err := packet.BuildUDP(b, packet.UDPHeader{Src: app, Dst: dst}, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeliverInbound([][]byte{b[:n]}); err != nil {
		t.Fatalf("DeliverInbound: %v", err)
	}
	select {
	case c := <-h:
		dw, ok := c.(stack.DatagramWriter)
		if !ok {
			t.Fatalf("%T is not a stack.DatagramWriter", c)
		}
		return dw, w
	case <-time.After(waitLimit):
		t.Fatal("no UDP flow reached the handler")
		return nil, nil
	}
}

// next waits for the next packet of protocol proto the stack writes.
func (w *writer) next(t *testing.T, proto uint8) packet.Packet {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		w.mu.Lock()
		for len(w.pkts) > 0 {
			b := w.pkts[0]
			w.pkts = w.pkts[1:]
			p, err := packet.ParseIP(b)
			if err != nil {
				w.mu.Unlock()
				t.Fatalf("the stack wrote a bad packet: %v", err)
			}
			if p.Proto == proto {
				w.mu.Unlock()
				return p
			}
		}
		w.mu.Unlock()
		select {
		case <-w.more:
		case <-deadline:
			t.Fatalf("the stack wrote no packet of protocol %d", proto)
			return packet.Packet{}
		}
	}
}

func writeFrom(t *testing.T, newStack NewStack) {
	dst := netip.MustParseAddrPort("198.19.0.2:3478")
	other := netip.MustParseAddrPort("198.19.0.9:5000")
	c, w := udpFlow(t, newStack, dst)
	if _, err := c.WriteFrom([]byte("from elsewhere"), other); err != nil {
		t.Fatalf("WriteFrom: %v", err)
	}
	p := w.next(t, packet.ProtoUDP)
	if p.SrcAddrPort() != other || p.DstAddrPort() != app || string(p.Payload) != "from elsewhere" {
		t.Errorf("wrote %v → %v %q, want %v → %v %q", p.SrcAddrPort(), p.DstAddrPort(), p.Payload, other, app, "from elsewhere")
	}
	// The flow's own destination still works through WriteFrom.
	if _, err := c.WriteFrom([]byte("from dst"), dst); err != nil {
		t.Fatalf("WriteFrom(dst): %v", err)
	}
	if p := w.next(t, packet.ProtoUDP); p.SrcAddrPort() != dst || string(p.Payload) != "from dst" {
		t.Errorf("wrote %v %q, want %v %q", p.SrcAddrPort(), p.Payload, dst, "from dst")
	}
}

func portUnreachable(t *testing.T, newStack NewStack) {
	dst := netip.MustParseAddrPort("198.19.0.2:3478")
	other := netip.MustParseAddrPort("198.19.0.9:5000")
	c, w := udpFlow(t, newStack, dst)
	if err := c.PortUnreachable(other, []byte("ping")); err != nil {
		t.Fatalf("PortUnreachable: %v", err)
	}
	p := w.next(t, packet.ProtoICMPv4)
	m := p.ICMPv4()
	if m.Type() != packet.ICMPv4DestUnreach || m.Code() != packet.ICMPv4CodePortUnreach {
		t.Fatalf("type %d code %d, want destination unreachable / port unreachable", m.Type(), m.Code())
	}
	if p.Src != other.Addr() || p.Dst != app.Addr() {
		t.Errorf("ICMP %v → %v, want %v → %v", p.Src, p.Dst, other.Addr(), app.Addr())
	}
	// The quote is the app's datagram to other: the app's kernel finds the
	// socket by these addresses and ports.
	q, err := packet.ParseIP(m.Payload())
	if err != nil {
		t.Fatalf("quote: %v", err)
	}
	if q.SrcAddrPort() != app || q.DstAddrPort() != other || !bytes.Equal(q.Payload, []byte("ping")) {
		t.Errorf("quote %v → %v %q, want %v → %v %q", q.SrcAddrPort(), q.DstAddrPort(), q.Payload, app, other, "ping")
	}
	// The flow stays open.
	if _, err := c.WriteFrom([]byte("still here"), dst); err != nil {
		t.Errorf("WriteFrom after PortUnreachable: %v", err)
	}
}
