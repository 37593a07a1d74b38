package conformance

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/tcp"
)

// sent is one segment the engine emitted, decoded, with the virtual time
// it was written at.
type sent struct {
	at       time.Duration
	seq, ack uint32
	flags    packet.TCPFlags
	wnd      uint16
	rawOpts  []byte
	opts     packet.TCPOptions
	dataLen  int
	src, dst netip.AddrPort
}

// harness wraps an Engine built in listen/accept mode on a manual clock:
// script time is how far the clock has moved from start.
type harness struct {
	e     *tcp.Engine
	clk   *clock.Manual
	start clock.Time

	mu        sync.Mutex // guards out, accepting, conns, badPacket
	out       []sent
	accepting map[netip.AddrPort]bool // remotes whose Accept has not sent its SYN-ACK yet
	conns     []stack.Conn            // established, not yet taken by accept()
	badPacket error
}

// listenHandler accepts every request at once, as a listening socket does.
type listenHandler struct{ h *harness }

func (l listenHandler) HandleTCP(ctx context.Context, r stack.Request) {
	h := l.h
	remote := r.ID().Src
	h.mu.Lock()
	h.accepting[remote] = true
	h.mu.Unlock()
	c, err := r.Accept(ctx)
	h.mu.Lock()
	delete(h.accepting, remote)
	if err == nil {
		h.conns = append(h.conns, c)
	}
	h.mu.Unlock()
}

func (l listenHandler) HandleUDP(_ context.Context, c stack.PacketConn) { c.Close() }

// WritePackets is the engine's PacketWriter: it records what is sent.
func (h *harness) WritePackets(bufs [][]byte, offset int) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range bufs {
		p, err := packet.ParseIP(b[offset:])
		if err != nil {
			h.badPacket = err
			continue
		}
		if p.Proto != packet.ProtoTCP {
			continue
		}
		tc := p.TCP()
		o, _ := packet.ParseTCPOptions(tc.Options())
		s := sent{at: h.elapsed(), seq: tc.Seq(), ack: tc.Ack(), flags: tc.Flags(), wnd: tc.Window(),
			rawOpts: append([]byte(nil), tc.Options()...), opts: o, dataLen: len(tc.Payload()),
			src: p.SrcAddrPort(), dst: p.DstAddrPort()}
		if s.flags&(packet.SYN|packet.ACK) == packet.SYN|packet.ACK {
			delete(h.accepting, s.dst)
		}
		h.out = append(h.out, s)
	}
	return len(bufs), nil
}

func newHarness(mod func(*tcp.Options)) (*harness, error) {
	// Any start but zero, which the engine reads as "unset".
	start := clock.Time(1_700_000_000 * time.Second)
	h := &harness{clk: clock.NewManual(start), start: start, accepting: map[netip.AddrPort]bool{}}
	opts := tcp.DefaultOptions()
	opts.Clock = h.clk
	if mod != nil {
		mod(&opts)
	}
	e, err := tcp.New(h, listenHandler{h}, opts)
	if err != nil {
		return nil, err
	}
	h.e = e
	return h, nil
}

// elapsed is the script time: how far the clock has moved since start.
// Inside a timer's callback, that is the timer's own deadline.
func (h *harness) elapsed() time.Duration { return h.clk.Now().Sub(h.start) }

// timerStep is how often advanceTo asks whether to stop. Timers fire on
// time (the manual clock runs each at its deadline), but the clock may
// run up to this far past the event that should stop it, well inside
// the default 4 ms tolerance.
const timerStep = time.Millisecond

// advanceTo moves the clock to script time t in timerStep steps, the
// engine's timers due in each step running at their deadlines, and stops
// early once stop reports true.
func (h *harness) advanceTo(t time.Duration, stop func() bool) {
	for {
		now := h.elapsed()
		if now >= t {
			return
		}
		h.clk.Set(h.start.Add(min(now+timerStep, t)))
		if stop != nil && stop() {
			return
		}
	}
}

// settle waits (in real time) until every SYN the engine handed to the
// handler has been answered: the handler runs on its own goroutine.
func (h *harness) settle() bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		n := len(h.accepting)
		h.mu.Unlock()
		if n == 0 && h.e.Stats().Pending == 0 {
			return true
		}
		time.Sleep(100 * time.Microsecond)
	}
	return false
}

func (h *harness) pending() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.out)
}

func (h *harness) pop() (sent, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.out) == 0 {
		return sent{}, false
	}
	s := h.out[0]
	h.out = h.out[1:]
	return s, true
}

// takeConn returns the next established connection, waiting briefly (in
// real time) for the handler to see the handshake complete.
func (h *harness) takeConn() stack.Conn {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		if len(h.conns) > 0 {
			c := h.conns[0]
			h.conns = h.conns[1:]
			h.mu.Unlock()
			return c
		}
		h.mu.Unlock()
		time.Sleep(100 * time.Microsecond)
	}
	return nil
}

// popIf removes and returns the next segment if ok accepts it.
func (h *harness) popIf(ok func(sent) bool) (sent, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.out) == 0 || !ok(h.out[0]) {
		return sent{}, false
	}
	s := h.out[0]
	h.out = h.out[1:]
	return s, true
}

// waitConn is a blocking accept: it returns the next established
// connection, or nil once stop is closed.
func (h *harness) waitConn(stop <-chan struct{}) stack.Conn {
	tick := time.NewTicker(100 * time.Microsecond)
	defer tick.Stop()
	for {
		h.mu.Lock()
		if len(h.conns) > 0 {
			c := h.conns[0]
			h.conns = h.conns[1:]
			h.mu.Unlock()
			return c
		}
		h.mu.Unlock()
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
	}
}

func (h *harness) close() {
	h.e.Close()
}
