package udp_test

import (
	"context"
	"testing"

	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/udp"
)

// discard is a PacketWriter that keeps nothing.
type discard struct{}

func (discard) WritePackets(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

// flowConn returns the PacketConn of a flow on a Table whose writer
// discards everything.
func flowConn(tb testing.TB, flow stack.FlowID) stack.PacketConn {
	tb.Helper()
	h := newHandler()
	h.serve = func(ctx context.Context, _ stack.PacketConn) { <-ctx.Done() }
	tab := udp.New(discard{}, h, udp.Options{})
	tb.Cleanup(func() { tab.Close() })
	tab.Deliver(udpPacket(tb, flow, []byte("x")))
	return <-h.conns
}

func TestWrite_DoesNotAllocateInSteadyState(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful with -race")
	}
	for _, size := range []int{100, 1400, 9000} {
		c := flowConn(t, flow4)
		payload := make([]byte, size)
		c.Write(payload) // warm the pool
		if n := testing.AllocsPerRun(100, func() { c.Write(payload) }); n != 0 {
			t.Errorf("Write of %d bytes: %v allocations per call, want 0", size, n)
		}
	}
}

func TestDeliverAndRead_DoNotAllocateInSteadyState(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful with -race")
	}
	h := newHandler()
	h.serve = func(ctx context.Context, _ stack.PacketConn) { <-ctx.Done() }
	tab := udp.New(discard{}, h, udp.Options{})
	defer tab.Close()
	p := udpPacket(t, flow4, make([]byte, 1200))
	tab.Deliver(p)
	c := <-h.conns
	buf := make([]byte, 2048)
	c.Read(buf)
	if n := testing.AllocsPerRun(100, func() {
		tab.Deliver(p)
		c.Read(buf)
	}); n != 0 {
		t.Errorf("Deliver and Read of an existing flow: %v allocations, want 0", n)
	}
}

func BenchmarkWrite(b *testing.B) {
	for _, bc := range []struct {
		name string
		flow stack.FlowID
		size int
	}{{"v4/100", flow4, 100}, {"v4/1400", flow4, 1400}, {"v6/1400", flow6, 1400}, {"v4/9000", flow4, 9000}} {
		b.Run(bc.name, func(b *testing.B) {
			c := flowConn(b, bc.flow)
			payload := make([]byte, bc.size)
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDeliverRead(b *testing.B) {
	h := newHandler()
	h.serve = func(ctx context.Context, _ stack.PacketConn) { <-ctx.Done() }
	tab := udp.New(discard{}, h, udp.Options{})
	defer tab.Close()
	p := udpPacket(b, flow4, make([]byte, 1400))
	tab.Deliver(p)
	c := <-h.conns
	buf := make([]byte, 2048)
	c.Read(buf)
	b.SetBytes(1400)
	b.ReportAllocs()
	for b.Loop() {
		tab.Deliver(p)
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}
