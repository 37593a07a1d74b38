package tcp

import (
	"fmt"
	"strings"
	"sync"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// maxLadderEntries bounds one recorded ladder: a handshake and a four-way
// close take about twenty entries; a connection that keeps resetting or
// retransmitting its FIN stops there.
const maxLadderEntries = 64

// maxLiveLadders bounds the ladders of live connections, whatever goes
// wrong: past it, new connections are not recorded.
const maxLiveLadders = 1 << 16

// Recorder keeps the ladders of connections (see Tracer): each live
// connection's, and those of the last connections that ended, for the
// connections API. A ladder is found by the ID the proxy gave its flow
// (Tracer.Bind). Entries are kept raw — a few dozen bytes, no formatting
// — and become lines only when Ladder is asked, so recording costs a
// connection little. Its methods are safe for concurrent use.
type Recorder struct {
	keep int

	mu     sync.Mutex // guards the fields below
	live   map[stack.FlowID]*ladder
	byConn map[uint64]*ladder
	done   []*ladder // finished ladders with an ID, oldest first; at most keep
}

// ladder is one connection's recorded entries.
type ladder struct {
	mu       sync.Mutex // guards the fields below
	conn     uint64     // 0 until bound; written under Recorder.mu
	entries  []ladderEntry
	dropped  int  // entries past maxLadderEntries
	irs, iss Seq  // the ISNs, from the SYNs seen, for relative numbers
	hasIRS   bool // irs is set
	hasISS   bool // iss is set
}

// entryKind says what a ladderEntry holds.
type entryKind uint8

const (
	entrySegIn      entryKind = iota + 1 // a segment from the app
	entrySegOut                          // a segment to the app
	entryState                           // a transition; text is the reason
	entryDrop                            // a dropped segment; text is the reason
	entryNote                            // an engine decision; text
	entryUpstream                        // gw ──► up; text
	entryUpstreamIn                      // gw ◄── up; text
	entrySkipped                         // n data and ACK segments not kept
)

// ladderEntry is one line of a ladder, unformatted.
type ladderEntry struct {
	at       clock.Time
	text     string // a reason (constant) or what the upstream side did
	seq, ack Seq
	tsval    uint32
	tsecr    uint32
	n        uint32 // payload length; for entrySkipped the count
	wnd      uint16
	mss      uint16
	flags    packet.TCPFlags
	kind     entryKind
	from, to State
	wscale   uint8
	opts     uint8 // optMSS | optWScale | optSACKOK | optTS
	nsack    uint8
}

const (
	optMSS = 1 << iota
	optWScale
	optSACKOK
	optTS
)

// segEntry is the entry of seg at now; why, when set, follows the line.
func segEntry(kind entryKind, seg *Segment, why string, now clock.Time) ladderEntry {
	e := ladderEntry{at: now, kind: kind, text: why, seq: seg.Seq, ack: seg.Ack, flags: seg.Flags,
		wnd: seg.Wnd, n: uint32(len(seg.Payload)), nsack: uint8(seg.Opts.NumSACK)}
	o := &seg.Opts
	if o.HasMSS {
		e.opts |= optMSS
		e.mss = o.MSS
	}
	if o.HasWScale {
		e.opts |= optWScale
		e.wscale = o.WScale
	}
	if o.SACKPermitted {
		e.opts |= optSACKOK
	}
	if o.HasTS {
		e.opts |= optTS
		e.tsval, e.tsecr = o.TSVal, o.TSEcr
	}
	return e
}

// NewRecorder keeps the ladders of live connections and of the last keep
// that ended.
func NewRecorder(keep int) *Recorder {
	return &Recorder{keep: max(keep, 0), live: make(map[stack.FlowID]*ladder), byConn: make(map[uint64]*ladder)}
}

// open starts a ladder for id (replacing a live one of an earlier
// connection on the same addresses) and returns it; nil past
// maxLiveLadders.
func (r *Recorder) open(id stack.FlowID) *ladder {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.live) >= maxLiveLadders && r.live[id] == nil {
		return nil
	}
	l := &ladder{entries: make([]ladderEntry, 0, 12)}
	r.live[id] = l
	return l
}

// ladderOf is the live ladder of id, nil if there is none.
func (r *Recorder) ladderOf(id stack.FlowID) *ladder {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[id]
}

func (r *Recorder) bind(id stack.FlowID, conn uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.live[id]
	if l == nil {
		return // ended already, or not recorded
	}
	l.conn = conn
	r.byConn[conn] = l
}

// retire moves the live ladder of id to the finished ones, dropping the
// oldest past keep.
func (r *Recorder) retire(id stack.FlowID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.live[id]
	if l == nil {
		return
	}
	delete(r.live, id)
	if l.conn == 0 {
		return // never became a flow of the proxy (RST, cookie failures)
	}
	r.done = append(r.done, l)
	for len(r.done) > r.keep {
		old := r.done[0]
		r.done[0] = nil
		r.done = r.done[1:]
		if r.byConn[old.conn] == old {
			delete(r.byConn, old.conn)
		}
	}
}

// Ladder returns the lines of connection conn's ladder, live or among
// the last finished, and whether there is one.
func (r *Recorder) Ladder(conn uint64) ([]string, bool) {
	r.mu.Lock()
	l := r.byConn[conn]
	r.mu.Unlock()
	if l == nil {
		return nil, false
	}
	return l.lines(), true
}

// add appends e, learning the ISNs from SYNs.
func (l *ladder) add(e ladderEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.flags&packet.SYN != 0 {
		switch {
		case e.kind == entrySegIn && !l.hasIRS:
			l.irs, l.hasIRS = e.seq, true
		case e.kind == entrySegOut && !l.hasISS:
			l.iss, l.hasISS = e.seq, true
		}
	}
	if len(l.entries) >= maxLadderEntries {
		l.dropped++
		return
	}
	l.entries = append(l.entries, e)
}

// lines formats the entries as the --trace ladder prints them.
func (l *ladder) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.entries)+1)
	var start clock.Time
	if len(l.entries) > 0 {
		start = l.entries[0].at
	}
	for i := range l.entries {
		out = append(out, l.format(&l.entries[i], start))
	}
	if l.dropped > 0 {
		out = append(out, fmt.Sprintf("… %d more lines not kept", l.dropped))
	}
	return out
}

func (l *ladder) format(e *ladderEntry, start clock.Time) string {
	arrow, what := "", e.text
	switch e.kind {
	case entrySegIn, entrySegOut:
		arrow = "app ──► gw"
		if e.kind == entrySegOut {
			arrow = "app ◄── gw"
		}
		what = l.describe(e)
		if e.text != "" {
			what += "  (" + e.text + ")"
		}
	case entryState:
		what = fmt.Sprintf("state %s → %s (%s)", e.from, e.to, e.text)
	case entryDrop:
		what = "drop: " + e.text
	case entryNote:
		arrow = "gw"
	case entryUpstream:
		arrow = "gw ──► up"
	case entryUpstreamIn:
		arrow = "gw ◄── up"
	case entrySkipped:
		what = fmt.Sprintf("… %d data and ACK segments", e.n)
	}
	ms := float64(e.at.Sub(start).Microseconds()) / 1000
	return fmt.Sprintf("%10.3fms  %-10s  %s", ms, arrow, what)
}

// describe is Tracer.describe for a recorded segment: numbers relative
// to each side's ISN, options but the SACK blocks (counted).
func (l *ladder) describe(e *ladderEntry) string {
	seqBase, ackBase, hasSeq, hasAck := l.irs, l.iss, l.hasIRS, l.hasISS
	if e.kind == entrySegOut {
		seqBase, ackBase, hasSeq, hasAck = l.iss, l.irs, l.hasISS, l.hasIRS
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-3s seq %d", e.flags, rel(e.seq, seqBase, hasSeq))
	if e.flags&packet.ACK != 0 {
		fmt.Fprintf(&sb, " ack %d", rel(e.ack, ackBase, hasAck))
	}
	fmt.Fprintf(&sb, " win %d", e.wnd)
	if e.n > 0 {
		fmt.Fprintf(&sb, " len %d", e.n)
	}
	var parts []string
	if e.opts&optMSS != 0 {
		parts = append(parts, fmt.Sprintf("mss %d", e.mss))
	}
	if e.opts&optSACKOK != 0 {
		parts = append(parts, "sackOK")
	}
	if e.opts&optTS != 0 {
		parts = append(parts, fmt.Sprintf("TS val %d ecr %d", e.tsval, e.tsecr))
	}
	if e.opts&optWScale != 0 {
		parts = append(parts, fmt.Sprintf("wscale %d", e.wscale))
	}
	if e.nsack > 0 {
		parts = append(parts, fmt.Sprintf("%d sack blocks", e.nsack))
	}
	if len(parts) > 0 {
		sb.WriteString(" <" + strings.Join(parts, ",") + ">")
	}
	return sb.String()
}

// quietState reports whether data may flow in s, so that a recorded
// ladder counts its plain segments instead of keeping them.
func quietState(s State) bool {
	switch s {
	case Established, CloseWait, FinWait1, FinWait2:
		return true
	}
	return false
}
