package tcp

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// pktHarness drives an Engine with hand-built packets on a manual clock
// and captures what it emits.
type pktHarness struct {
	t   *testing.T
	e   *Engine
	clk *clock.Manual

	mu   sync.Mutex
	out  [][]byte // packets emitted, oldest first, not yet taken
	reqs chan stack.Request
}

// capture is the harness's PacketWriter.
type capture struct{ h *pktHarness }

func (c capture) WritePackets(bufs [][]byte, offset int) (int, error) {
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	for _, b := range bufs {
		if offset < stack.Headroom {
			c.h.t.Errorf("WritePackets offset %d < headroom", offset)
		}
		c.h.out = append(c.h.out, append([]byte(nil), b[offset:]...))
	}
	return len(bufs), nil
}

// chanHandler hands every request to the test through a channel.
type chanHandler struct{ reqs chan stack.Request }

func (h chanHandler) HandleTCP(ctx context.Context, r stack.Request) {
	h.reqs <- r
	<-ctx.Done() // the test decides; returning early would reset undecided flows
}
func (h chanHandler) HandleUDP(ctx context.Context, c stack.PacketConn) { c.Close() }

func newPktHarness(t *testing.T, mod func(*Options)) *pktHarness {
	t.Helper()
	h := &pktHarness{t: t, clk: clock.NewManual(pktT0), reqs: make(chan stack.Request, 64)}
	opts := DefaultOptions()
	opts.Clock = h.clk
	if mod != nil {
		mod(&opts)
	}
	e, err := New(capture{h}, chanHandler{h.reqs}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	t.Cleanup(func() { e.Close() })
	return h
}

// pktT0 is where the harnesses' manual clocks start: any non-zero
// instant, as a zero clock.Time means "unset" to the engine.
const pktT0 = clock.Time(1_700_000_000 * time.Second)

func (h *pktHarness) clock() clock.Time { return h.clk.Now() }

// advance moves the clock by d; the engine's timers due on the way run,
// each at its own deadline.
func (h *pktHarness) advance(d time.Duration) { h.clk.Advance(d) }

var (
	appAddr = netip.MustParseAddrPort("198.18.0.1:40000")
	dstAddr = netip.MustParseAddrPort("198.19.0.2:80")
)

// seg describes a segment from the app.
type seg struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    packet.TCPFlags
	wnd      uint16
	opts     *packet.TCPOptions
	data     []byte
}

// send injects a segment from the app (defaults: appAddr → dstAddr,
// window 65535).
func (h *pktHarness) send(s seg) {
	h.t.Helper()
	if err := h.e.DeliverInbound([][]byte{h.build(s)}); err != nil {
		h.t.Fatal(err)
	}
}

// got is one segment the engine emitted, decoded.
type got struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    packet.TCPFlags
	wnd      uint16
	opts     packet.TCPOptions
	data     []byte
}

// take returns every emitted TCP segment since the last call.
func (h *pktHarness) take() []got {
	h.t.Helper()
	h.mu.Lock()
	out := h.out
	h.out = nil
	h.mu.Unlock()
	var gs []got
	for _, b := range out {
		p, err := packet.ParseIP(b)
		if err != nil {
			h.t.Fatalf("engine emitted a bad packet: %v", err)
		}
		if p.Proto != packet.ProtoTCP {
			continue
		}
		tc := p.TCP()
		o, _ := packet.ParseTCPOptions(tc.Options())
		gs = append(gs, got{src: p.SrcAddrPort(), dst: p.DstAddrPort(), seq: tc.Seq(), ack: tc.Ack(),
			flags: tc.Flags(), wnd: tc.Window(), opts: o, data: append([]byte(nil), tc.Payload()...)})
	}
	return gs
}

// expectOne waits briefly (other goroutines may emit) for exactly one
// segment and returns it.
func (h *pktHarness) expectOne(what string) got {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var gs []got
	for time.Now().Before(deadline) {
		gs = append(gs, h.take()...)
		if len(gs) > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if len(gs) != 1 {
		h.t.Fatalf("%s: engine emitted %d segments %+v; want 1", what, len(gs), gs)
	}
	return gs[0]
}

func (h *pktHarness) expectNone(what string) {
	h.t.Helper()
	if gs := h.take(); len(gs) != 0 {
		h.t.Fatalf("%s: engine emitted %+v; want nothing", what, gs)
	}
}

// request waits for the handler to receive the next request.
func (h *pktHarness) request() stack.Request {
	h.t.Helper()
	select {
	case r := <-h.reqs:
		return r
	case <-time.After(5 * time.Second):
		h.t.Fatal("handler got no request")
		return nil
	}
}

// fullSYNOpts are the options a Linux client offers.
func fullSYNOpts(tsval uint32) *packet.TCPOptions {
	return &packet.TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, HasTS: true, TSVal: tsval,
		WScale: 7, HasWScale: true}
}

// establish runs a handshake with isn near 2^32 and returns the Conn and
// our ISS.
func (h *pktHarness) establish(isn uint32) (stack.Conn, uint32) {
	h.t.Helper()
	h.send(seg{seq: isn, flags: packet.SYN})
	r := h.request()
	type res struct {
		c   stack.Conn
		err error
	}
	done := make(chan res, 1)
	go func() { c, err := r.Accept(context.Background()); done <- res{c, err} }()
	sa := h.expectOne("SYN-ACK")
	h.send(seg{seq: isn + 1, ack: sa.seq + 1, flags: packet.ACK})
	rr := <-done
	if rr.err != nil {
		h.t.Fatalf("Accept: %v", rr.err)
	}
	return rr.c, sa.seq
}
