package tcp

import (
	"sync/atomic"
	"time"
)

// Tail loss probe, RFC 8985 §7. When the ACKs for the end of a flight do
// not come (the last segments, or their ACKs, were lost), nothing else
// would make the peer speak before the retransmission timeout, at least
// MinRTO (200 ms) away: on the gateway's sub-millisecond paths that is
// hundreds of round trips of silence. The probe timeout (PTO) fires after
// about two round trips instead and sends one segment, new data if the
// peer's window allows, else the last segment again; the ACK it draws
// either completes the flight (only ACKs were lost) or carries the SACK
// blocks that start loss recovery. The RTO stays the last resort.
//
// RFC 8985 pairs the probe with RACK's time-based loss detection, which
// this engine does not have: losses before the probe are still found by
// RFC 6675's SACK rules.

const (
	// tlpMaxAckDelay is TLP.max_ack_delay (RFC 8985 §7.2), added when a
	// single segment is in flight, whose ACK the peer may delay. Linux
	// uses its minimum RTO, 200 ms.
	tlpMaxAckDelay = 200 * time.Millisecond
	// tlpSlack is added to 2·SRTT, as Linux adds TCP_TIMEOUT_MIN: on a
	// path of tens of microseconds 2·SRTT alone is below the scheduling
	// resolution of both ends, and every flight would be probed.
	tlpSlack = 2 * time.Millisecond
)

// tlp is the probe's state (RFC 8985 §7.1); the PTO deadline is
// timers.ptoAt.
type tlp struct {
	tlpRearm   bool // new data went out or new data was acknowledged: Output recomputes the PTO
	tlpDue     bool // the PTO fired: Output sends the probe
	tlpActive  bool // TLP.end_seq is set: a probe's episode is open
	tlpRetrans bool // TLP.is_retrans
	tlpSampled bool // an RTT sample was taken since the last probe
	tlpStart   Seq  // the probe's first sequence number
	tlpEnd     Seq  // TLP.end_seq: SND.NXT after the probe
}

// resetTLP ends any episode and disarms the PTO: fast recovery and RTO
// recovery take over (RFC 8985 §7.1).
func (t *TCB) resetTLP() {
	t.tlpActive, t.tlpRetrans, t.tlpDue = false, false, false
	t.ptoAt = 0
}

// armPTO (re)starts the probe timer after new data went out or new data
// was acknowledged, unless loss recovery runs, SACKed data is outstanding
// or a probe's episode is open (RFC 8985 §7.2); with nothing in flight it
// is disarmed. The PTO is 2·SRTT (plus tlpSlack), plus tlpMaxAckDelay for
// a single segment, or 1 s without an RTT sample; when the RTO would
// fire first, only the RTO is left armed.
func (t *TCB) armPTO() {
	t.ptoAt = 0
	if !t.cfg.TailLossProbe || !t.sackOK || t.inRecovery || t.tlpActive || t.sacked() ||
		t.sndUna == t.sndMax || t.sndNxt != t.sndMax || t.rtoRetries > 0 || t.rtoAt == 0 {
		return
	}
	switch t.state {
	case Established, CloseWait, FinWait1, Closing, LastAck:
	default:
		return
	}
	pto := time.Second
	if t.hasSample {
		pto = 2*t.srtt + tlpSlack
		if t.flight() <= t.smss() {
			pto += tlpMaxAckDelay
		}
	}
	if at := t.now.Add(pto); at.Before(t.rtoAt) {
		t.ptoAt = at
	}
}

// onPTO runs when the probe timer fires: the probe goes out if no other
// is in flight and an RTT sample came since the last one (RFC 8985 §7.3);
// either way the RTO is armed afresh, not the PTO.
func (t *TCB) onPTO() {
	if t.sndUna == t.sndMax {
		return
	}
	if !t.tlpActive && t.tlpSampled && !t.inRecovery && t.sndNxt == t.sndMax {
		t.tlpDue = true
	}
	t.armRTO()
}

// sendLossProbe sends the probe (RFC 8985 §7.3, TLP_send_probe): the
// first unsent segment if there is one and the peer's window takes it,
// beyond cwnd; otherwise the highest-sequence segment sent so far again,
// with the FIN if that is where the FIN is.
func (t *TCB) sendLossProbe(emit func(*Segment)) {
	if t.sndUna == t.sndMax || t.sndNxt != t.sndMax {
		return // acknowledged, or recovery began, meanwhile
	}
	mss := int(t.effMSS())
	avail := t.sndBuf.len() - t.dataOff(t.sndNxt)
	finNext := t.finQueued && !t.finSent
	var peer int
	if edge := t.sndUna.Add(t.sndWnd); edge.GreaterThan(t.sndNxt) {
		peer = int(uint32(edge - t.sndNxt))
	}
	start := t.sndNxt
	if (avail > 0 && peer > 0) || (avail == 0 && finNext) {
		n := min(avail, mss, peer)
		fin := finNext && n == avail
		t.sendSegment(emit, start, n, fin)
		t.sndNxt = start.Add(uint32(n))
		if fin {
			t.sndNxt = t.sndNxt.Add(1)
		}
		t.sndMax = t.sndNxt
		t.tlpRetrans = false
	} else {
		dataEnd, fin := t.sndMax, t.finSent && t.sndMax == t.finSeq.Add(1)
		if fin {
			dataEnd = t.finSeq
		}
		n := min(int(uint32(dataEnd-t.sndUna)), mss)
		if n == 0 && !fin {
			return
		}
		start = dataEnd - Seq(n)
		t.sendSegment(emit, start, n, fin)
		t.tlpRetrans = true
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.TLPProbes })
	t.tlpStart, t.tlpEnd, t.tlpActive, t.tlpSampled = start, t.sndMax, true, false
}

// tlpProcessAck is TLP_process_ack (RFC 8985 §7.4.2) for an ACK at or
// beyond TLP.end_seq. A probe of new data, a D-SACK of the probe, or a
// pure duplicate ACK ends the episode: nothing was lost. An ACK beyond
// TLP.end_seq without either means the probe repaired a loss, and the
// controller reduces its window as fast recovery would. An ACK of exactly
// TLP.end_seq leaves the episode open: the D-SACK of a spurious probe may
// follow it.
func (t *TCB) tlpProcessAck(seg *Segment, advanced bool) {
	switch {
	case !t.tlpRetrans:
		t.tlpActive = false
	case t.dsackOf(seg, t.tlpStart, t.tlpEnd):
		t.tlpActive = false
	case seg.Ack.GreaterThan(t.tlpEnd):
		t.tlpActive = false
		t.count(func(c *Counters) *atomic.Uint64 { return &c.TLPRecoveries })
		t.cc.onEnterRecovery(t.now, min(t.flight(), t.cc.cwnd()))
		t.cc.onExitRecovery(t.now)
	case !advanced && seg.Opts.NumSACK == 0 && len(seg.Payload) == 0:
		t.tlpActive = false
	}
}

// dsackOf reports whether seg's first SACK block is a D-SACK (RFC 2883
// §4: below the cumulative ACK, or inside the second block) covering part
// of [start, end).
func (t *TCB) dsackOf(seg *Segment, start, end Seq) bool {
	n := min(int(seg.Opts.NumSACK), len(seg.Opts.SACKBlocks))
	if n == 0 {
		return false
	}
	b := seg.Opts.SACKBlocks[0]
	s, e := Seq(b.Start), Seq(b.End)
	dsack := e.LessEq(seg.Ack)
	if !dsack && n > 1 {
		o := seg.Opts.SACKBlocks[1]
		dsack = Seq(o.Start).LessEq(s) && e.LessEq(Seq(o.End))
	}
	return dsack && s.LessThan(end) && start.LessThan(e)
}
