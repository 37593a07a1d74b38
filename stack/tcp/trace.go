package tcp

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// Tracer prints the connections that match its filter as a ladder: every
// segment between the app and the gateway with flags, relative sequence
// and acknowledgment numbers, window and options, every state transition
// and dropped segment of the TCB, and what happened on the upstream side
// (dial, half-close, abort). It is how a person watches the three-way
// handshake and the four-way close. A nil *Tracer traces nothing.
type Tracer struct {
	addr netip.Addr // zero: any address
	port uint16     // zero: any port
	// rec, when set, also keeps every connection's ladder; the filter
	// then selects only what is written to w (nil: nothing).
	rec *Recorder

	mu    sync.Mutex // guards w and flows, and clk against useClock (set before any traffic, read without it)
	clk   clock.Clock
	w     io.Writer
	flows map[stack.FlowID]*traceFlow
}

// traceFlow remembers what makes a flow's lines relative.
type traceFlow struct {
	start    clock.Time
	irs, iss Seq
	hasIRS   bool
	hasISS   bool
}

// NewTracer traces the connections filter selects: a port ("80"), an
// address ("198.19.0.2", "2001:2::1") or both ("198.19.0.2:80",
// "[2001:2::1]:80"); either end of a connection may match. Its lines are
// timed on the clock of the engine it is given to (Options.Trace), so a
// Tracer serves one engine.
func NewTracer(w io.Writer, filter string) (*Tracer, error) {
	t := &Tracer{clk: clock.Real(), w: w, flows: make(map[stack.FlowID]*traceFlow)}
	filter = strings.TrimSpace(filter)
	if p, err := strconv.ParseUint(filter, 10, 16); err == nil && p > 0 {
		t.port = uint16(p)
		return t, nil
	}
	if a, err := netip.ParseAddr(filter); err == nil {
		t.addr = a.Unmap()
		return t, nil
	}
	if ap, err := netip.ParseAddrPort(filter); err == nil && ap.Port() > 0 {
		t.addr, t.port = ap.Addr().Unmap(), ap.Port()
		return t, nil
	}
	return nil, fmt.Errorf("tcp: trace filter %q: want a port, an address or address:port", filter)
}

// NewRecordingTracer traces every connection into rec, writing none.
func NewRecordingTracer(rec *Recorder) *Tracer {
	return &Tracer{clk: clock.Real(), rec: rec, flows: make(map[stack.FlowID]*traceFlow)}
}

// Record keeps every connection's ladder in rec as well as writing the
// filtered ones; call it before the Tracer is given to an engine.
func (t *Tracer) Record(rec *Recorder) { t.rec = rec }

// Match reports whether the flow is traced: written, or recorded.
func (t *Tracer) Match(id stack.FlowID) bool {
	if t == nil {
		return false
	}
	return t.rec != nil || t.writes(id)
}

// now is the time on the engine's clock. useClock sets the clock before
// the Tracer sees any traffic, so reading it needs no lock.
func (t *Tracer) now() clock.Time { return t.clk.Now() }

// recorded is the live recorded ladder of id, nil when none: no
// Recorder, or the flow never entered the table (a SYN answered with a
// cookie, a stray ACK), which so leaves nothing behind.
func (t *Tracer) recorded(id stack.FlowID) *ladder {
	if t == nil || t.rec == nil {
		return nil
	}
	return t.rec.ladderOf(id)
}

// start begins the recorded ladder of a flow entering the table with
// seg (its SYN, or the ACK that carried a valid cookie).
func (t *Tracer) start(id stack.FlowID, seg *Segment, why string) {
	if t == nil || t.rec == nil {
		return
	}
	if l := t.rec.open(id); l != nil {
		l.add(segEntry(entrySegIn, seg, why, t.now()))
	}
}

// writes reports whether the flow's lines go to w.
func (t *Tracer) writes(id stack.FlowID) bool {
	if t == nil || t.w == nil {
		return false
	}
	if t.addr.IsValid() && id.Src.Addr().Unmap() != t.addr && id.Dst.Addr().Unmap() != t.addr {
		return false
	}
	return t.port == 0 || id.Src.Port() == t.port || id.Dst.Port() == t.port
}

// attach installs the trace hook on a new flow's TCB and records how it
// got to its first state.
func (t *Tracer) attach(f *flow) {
	id := f.id
	w, l := t.writes(id), t.recorded(id)
	if !w && l == nil {
		return
	}
	// A recorded ladder is the handshake and the teardown: the data
	// segments in between are counted, not kept. The hook runs under the
	// flow's lock, so skipped needs none.
	skipped := uint32(0)
	f.tcb.SetTrace(func(ev TraceEvent) {
		if w {
			t.tcbEvent(id, ev)
		}
		if l == nil {
			return
		}
		seg := ev.Kind == TraceSegIn || ev.Kind == TraceSegOut
		if seg && quietState(ev.From) && ev.Seg.Flags&(packet.SYN|packet.FIN|packet.RST) == 0 {
			skipped++
			return
		}
		now := t.now()
		if skipped > 0 {
			l.add(ladderEntry{at: now, kind: entrySkipped, n: skipped})
			skipped = 0
		}
		switch ev.Kind {
		case TraceSegIn:
			l.add(segEntry(entrySegIn, ev.Seg, "", now))
		case TraceSegOut:
			l.add(segEntry(entrySegOut, ev.Seg, "", now))
		case TraceState:
			l.add(ladderEntry{at: now, kind: entryState, from: ev.From, to: ev.To, text: ev.Reason})
		case TraceDrop:
			l.add(ladderEntry{at: now, kind: entryDrop, text: ev.Reason})
		}
	})
	if w {
		t.line(id, "", fmt.Sprintf("state LISTEN → %s (%s)", f.tcb.State(), f.tcb.Reason()))
	}
	if l != nil {
		l.add(ladderEntry{at: t.now(), kind: entryState, from: Listen, to: f.tcb.State(), text: f.tcb.Reason()})
	}
}

// Upstream records an event on the upstream side of a traced flow.
func (t *Tracer) Upstream(id stack.FlowID, what string) {
	t.text(id, entryUpstream, "gw ──► up", what)
}

// UpstreamIn records something the upstream did (connected, FIN, RST).
func (t *Tracer) UpstreamIn(id stack.FlowID, what string) {
	t.text(id, entryUpstreamIn, "gw ◄── up", what)
}

// note records an engine-level decision about a traced flow.
func (t *Tracer) note(id stack.FlowID, what string) { t.text(id, entryNote, "gw", what) }

// text writes and records a line of words about the flow.
func (t *Tracer) text(id stack.FlowID, kind entryKind, arrow, what string) {
	if t.writes(id) {
		t.line(id, arrow, what)
	}
	if l := t.recorded(id); l != nil {
		l.add(ladderEntry{at: t.now(), kind: kind, text: what})
	}
}

// segment records a segment the engine sent or got outside a TCB.
func (t *Tracer) segment(id stack.FlowID, dir string, seg *Segment, why string) {
	if l := t.recorded(id); l != nil {
		kind := entrySegIn
		if dir == "out" {
			kind = entrySegOut
		}
		l.add(segEntry(kind, seg, why, t.now()))
	}
	if !t.writes(id) {
		return
	}
	arrow := "app ──► gw"
	if dir == "out" {
		arrow = "app ◄── gw"
	}
	if why != "" {
		why = "  (" + why + ")"
	}
	t.line(id, arrow, t.describe(id, seg, dir == "out")+why)
}

func (t *Tracer) tcbEvent(id stack.FlowID, ev TraceEvent) {
	switch ev.Kind {
	case TraceSegIn:
		t.line(id, "app ──► gw", t.describe(id, ev.Seg, false))
	case TraceSegOut:
		t.line(id, "app ◄── gw", t.describe(id, ev.Seg, true))
	case TraceState:
		t.line(id, "", fmt.Sprintf("state %s → %s (%s)", ev.From, ev.To, ev.Reason))
	case TraceDrop:
		t.line(id, "", "drop: "+ev.Reason)
	}
}

// describe formats a segment tcpdump-style with sequence numbers relative
// to each side's ISN.
func (t *Tracer) describe(id stack.FlowID, seg *Segment, out bool) string {
	t.mu.Lock()
	tf := t.flowLocked(id)
	if seg.Flags&packet.SYN != 0 {
		if out {
			tf.iss, tf.hasISS = seg.Seq, true
		} else {
			tf.irs, tf.hasIRS = seg.Seq, true
		}
	}
	seqBase, ackBase, hasSeq, hasAck := tf.irs, tf.iss, tf.hasIRS, tf.hasISS
	if out {
		seqBase, ackBase, hasSeq, hasAck = tf.iss, tf.irs, tf.hasISS, tf.hasIRS
	}
	t.mu.Unlock()

	var sb strings.Builder
	fmt.Fprintf(&sb, "%-3s seq %d", seg.Flags, rel(seg.Seq, seqBase, hasSeq))
	if seg.Flags&packet.ACK != 0 {
		fmt.Fprintf(&sb, " ack %d", rel(seg.Ack, ackBase, hasAck))
	}
	fmt.Fprintf(&sb, " win %d", seg.Wnd)
	if n := len(seg.Payload); n > 0 {
		fmt.Fprintf(&sb, " len %d", n)
	}
	if o := formatOptions(&seg.Opts); o != "" {
		sb.WriteString(" <" + o + ">")
	}
	return sb.String()
}

func rel(s, base Seq, ok bool) uint32 {
	if !ok {
		return uint32(s)
	}
	return uint32(s - base)
}

func formatOptions(o *packet.TCPOptions) string {
	var parts []string
	if o.HasMSS {
		parts = append(parts, fmt.Sprintf("mss %d", o.MSS))
	}
	if o.SACKPermitted {
		parts = append(parts, "sackOK")
	}
	if o.HasTS {
		parts = append(parts, fmt.Sprintf("TS val %d ecr %d", o.TSVal, o.TSEcr))
	}
	if o.HasWScale {
		parts = append(parts, fmt.Sprintf("wscale %d", o.WScale))
	}
	for i := 0; i < o.NumSACK; i++ {
		parts = append(parts, fmt.Sprintf("sack %d:%d", o.SACKBlocks[i].Start, o.SACKBlocks[i].End))
	}
	return strings.Join(parts, ",")
}

// useClock times the lines on clk, the engine's clock, from now on.
func (t *Tracer) useClock(clk clock.Clock) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.clk = clk
	t.mu.Unlock()
}

func (t *Tracer) flowLocked(id stack.FlowID) *traceFlow {
	tf := t.flows[id]
	if tf == nil {
		tf = &traceFlow{start: t.clk.Now()}
		t.flows[id] = tf
		if t.writes(id) {
			fmt.Fprintf(t.w, "── %s → %s ──\n", id.Src, id.Dst)
		}
	}
	return tf
}

// line prints one ladder line: time since the flow's first line, the
// arrow (who talks to whom) and what happened.
func (t *Tracer) line(id stack.FlowID, arrow, what string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tf := t.flowLocked(id)
	ms := float64(t.clk.Now().Sub(tf.start).Microseconds()) / 1000
	fmt.Fprintf(t.w, "%10.3fms  %-10s  %s\n", ms, arrow, what)
}

// Bind names the ladder of flow id by conn, the ID the connections API
// shows, so that Ladder finds it; a no-op without a Recorder.
func (t *Tracer) Bind(id stack.FlowID, conn uint64) {
	if t != nil && t.rec != nil {
		t.rec.bind(id, conn)
	}
}

// Open starts the recorded ladder of flow id where no engine does (the
// gVisor stack's flows); Done ends it.
func (t *Tracer) Open(id stack.FlowID) {
	if t != nil && t.rec != nil {
		t.rec.open(id)
	}
}

// Done ends the ladder of flow id where no engine does: it is kept as a
// finished one.
func (t *Tracer) Done(id stack.FlowID) { t.forget(id) }

// forget drops a finished flow's trace state; its recorded ladder is
// kept as a finished one.
func (t *Tracer) forget(id stack.FlowID) {
	if t == nil {
		return
	}
	if t.writes(id) {
		t.mu.Lock()
		delete(t.flows, id)
		t.mu.Unlock()
	}
	if t.rec != nil {
		t.rec.retire(id)
	}
}
