package tcp

import (
	"bytes"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// Sequence numbers start close to 2^32 so that every test crosses the
// wrap: our ISS wraps after 255 bytes, the peer's after 15.
const (
	testISS Seq = 0xffffff00
	testIRS Seq = 0xfffffff0
	// peerShift is the window scale the simulated peer announces.
	peerShift = 7
	// peerWnd is the raw window field the peer sends (scaled: 8 MiB).
	peerWnd = 0xffff
)

var t0 = clock.Time(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())

// harness drives one TCB with hand-made segments from a simulated peer and
// records what the TCB emits. Time is manual.
type harness struct {
	t      *testing.T
	cfg    Config
	tcb    *TCB
	now    clock.Time
	out    []Segment // emitted since the last take, payloads copied
	stats  Counters
	traces []TraceEvent

	peerNxt Seq    // next sequence number the peer sends
	peerTS  uint32 // the peer's timestamp clock
	noTS    bool   // do not add timestamps to input automatically
}

// testConfig is DefaultConfig with every option on.
func testConfig() Config { return DefaultConfig() }

// newHarness returns a harness without a TCB; mod edits the Config.
func newHarness(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, cfg: testConfig(), now: t0, peerNxt: testIRS, peerTS: 1000}
	for _, m := range mod {
		m(&h.cfg)
	}
	h.cfg.Stats = &h.stats
	h.cfg.SetDefaults()
	return h
}

// peerSyn is the SYN of the simulated peer: MSS 1460, WS 7, SACK, TS.
func (h *harness) peerSyn() Segment {
	return Segment{
		Seq: testIRS, Flags: packet.SYN, Wnd: 64240,
		Opts: packet.TCPOptions{
			MSS: 1460, HasMSS: true, WScale: peerShift, HasWScale: true,
			SACKPermitted: true, TSVal: h.peerTS, HasTS: true,
		},
	}
}

// open creates the TCB from syn (NewSynReceived) and collects the output.
func (h *harness) open(syn Segment) {
	h.t.Helper()
	h.tcb = NewSynReceived(&h.cfg, &syn, testISS, 0x1000, h.now)
	h.tcb.SetTrace(func(e TraceEvent) {
		e.Seg = nil // borrowed
		h.traces = append(h.traces, e)
	})
	h.peerNxt = syn.Seq.Add(1)
	h.output()
}

// output runs Output and appends copies of what it emits.
func (h *harness) output() {
	h.tcb.Output(h.now, func(s *Segment) {
		c := *s
		c.Payload = bytes.Clone(s.Payload)
		h.out = append(h.out, c)
	})
}

// in feeds seg (adding the peer's timestamps when negotiated and not set)
// and collects the output.
func (h *harness) in(seg Segment) {
	h.t.Helper()
	if h.tcb.tsOK && !h.noTS && !seg.Opts.HasTS {
		h.peerTS++
		seg.Opts.HasTS, seg.Opts.TSVal, seg.Opts.TSEcr = true, h.peerTS, h.tcb.tsNow()
	}
	h.tcb.Input(&seg, h.now)
	h.output()
}

// advance moves the clock, runs due timers and collects the output.
func (h *harness) advance(d time.Duration) {
	h.now = h.now.Add(d)
	if dl := h.tcb.Deadline(); dl != 0 && !h.now.Before(dl) {
		h.tcb.OnTimer(h.now)
	}
	h.output()
}

// take returns and clears the recorded output.
func (h *harness) take() []Segment {
	o := h.out
	h.out = nil
	return o
}

// one asserts exactly one segment was emitted and returns it.
func (h *harness) one() Segment {
	h.t.Helper()
	o := h.take()
	if len(o) != 1 {
		h.t.Fatalf("emitted %d segments, want 1: %v", len(o), segsString(o))
	}
	return o[0]
}

// none asserts nothing was emitted.
func (h *harness) none() {
	h.t.Helper()
	if o := h.take(); len(o) != 0 {
		h.t.Fatalf("emitted %v, want nothing", segsString(o))
	}
}

func segsString(s []Segment) []string {
	r := make([]string, len(s))
	for i := range s {
		r[i] = s[i].String()
	}
	return r
}

// ack is a pure ACK from the peer at its next sequence number,
// acknowledging everything we sent.
func (h *harness) ack() Segment {
	return Segment{Seq: h.peerNxt, Ack: h.tcb.sndMax, Flags: packet.ACK, Wnd: peerWnd}
}

// ackOf acknowledges up to a.
func (h *harness) ackOf(a Seq) Segment {
	s := h.ack()
	s.Ack = a
	return s
}

// data is a segment of payload at the peer's next sequence number; the
// peer's sequence number advances.
func (h *harness) data(p []byte) Segment {
	s := h.ack()
	s.Flags |= packet.PSH
	s.Payload = p
	h.peerNxt = h.peerNxt.Add(uint32(len(p)))
	return s
}

// fin is a FIN from the peer; the peer's sequence number advances.
func (h *harness) fin() Segment {
	s := h.ack()
	s.Flags |= packet.FIN
	h.peerNxt = h.peerNxt.Add(1)
	return s
}

// rst is a RST at seq.
func (h *harness) rst(seq Seq) Segment {
	return Segment{Seq: seq, Flags: packet.RST}
}

// wantState fails unless the TCB is in st.
func (h *harness) wantState(st State) {
	h.t.Helper()
	if got := h.tcb.State(); got != st {
		h.t.Fatalf("state %v, want %v (reason %q)", got, st, h.tcb.Reason())
	}
}

// lastDrop returns the reason of the last drop traced.
func (h *harness) lastDrop() string {
	for i := len(h.traces) - 1; i >= 0; i-- {
		if h.traces[i].Kind == TraceDrop {
			return h.traces[i].Reason
		}
	}
	return ""
}

// wantDrop fails unless the last traced drop has reason.
func (h *harness) wantDrop(reason string) {
	h.t.Helper()
	if got := h.lastDrop(); got != reason {
		h.t.Fatalf("drop reason %q, want %q", got, reason)
	}
}

// wantAck fails unless s is a pure ACK of ack.
func wantAck(t *testing.T, s Segment, ack Seq) {
	t.Helper()
	if s.Flags != packet.ACK || s.Ack != ack || len(s.Payload) != 0 {
		t.Fatalf("got %v, want pure ACK of %d", s.String(), ack)
	}
}

// --- Fixtures: each builds a TCB in a state by driving real segments. ---

func synRcvd(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := newHarness(t, mod...)
	h.open(h.peerSyn())
	sa := h.one()
	if sa.Flags != packet.SYN|packet.ACK {
		t.Fatalf("first output %v, want SYN-ACK", sa.String())
	}
	h.wantState(SynReceived)
	return h
}

func established(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := synRcvd(t, mod...)
	h.in(h.ack())
	h.none()
	h.wantState(Established)
	h.tcb.Events()
	return h
}

// finWait1 has our FIN sent and unacknowledged.
func finWait1(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := established(t, mod...)
	h.tcb.CloseWrite()
	h.output()
	if f := h.one(); f.Flags&packet.FIN == 0 {
		t.Fatalf("sent %v, want FIN", f.String())
	}
	h.wantState(FinWait1)
	return h
}

func finWait2(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := finWait1(t, mod...)
	h.in(h.ack())
	h.none()
	h.wantState(FinWait2)
	return h
}

func closeWait(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := established(t, mod...)
	h.in(h.fin())
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(CloseWait)
	return h
}

// lastAck has our FIN sent after the peer's.
func lastAck(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := closeWait(t, mod...)
	h.tcb.CloseWrite()
	h.output()
	if f := h.one(); f.Flags&packet.FIN == 0 {
		t.Fatalf("sent %v, want FIN", f.String())
	}
	h.wantState(LastAck)
	return h
}

// closing: both FINs crossed, ours not yet acknowledged.
func closing(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := finWait1(t, mod...)
	f := h.fin()
	f.Ack = h.tcb.sndUna // does not cover our FIN
	h.in(f)
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(Closing)
	return h
}

func timeWait(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	h := finWait2(t, mod...)
	h.in(h.fin())
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(TimeWait)
	return h
}

// pattern returns n deterministic bytes starting at offset off of an
// endless test stream.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint32(off + i)
		b[i] = byte(x*2654435761>>24) ^ byte(x)
	}
	return b
}
