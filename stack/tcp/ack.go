package tcp

import (
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// maxBurst bounds the segments sent in one go after fast recovery ends
// (RFC 6582 §3.2 step 3 option 2 asks for a burst limit).
const maxBurst = 4

// recovery is the sender's loss-recovery state (RFC 5681 §3.2, RFC 6582).
type recovery struct {
	cc          congestionControl
	dupAcks     int
	inRecovery  bool
	recover     Seq // RFC 6582 "recover": SND.NXT when recovery began
	partialSeen bool
	burst       int       // segments Output may still send at once; <0 unlimited
	lastSendAt  time.Time // for the RFC 5681 §4.1 restart window
}

// initCC creates the congestion controller once the MSS is known. An
// unknown name falls back to the default (Config validation is the
// engine's job; the TCB must not fail here).
func (t *TCB) initCC(now time.Time) {
	if t.cc != nil {
		return
	}
	// The controller counts in full segments as sent: the MSS less the
	// timestamp option (RFC 5681 §2 SMSS excludes options).
	smss := t.sndMSS
	if t.tsOK {
		smss -= tsOptLen
	}
	cc, err := newCongestionControl(t.cfg.CongestionControl, smss, now)
	if err != nil {
		cc, _ = newCongestionControl("", smss, now)
	}
	t.cc = cc
}

// flight is FlightSize (RFC 5681 §2): sent and not yet acknowledged.
func (t *TCB) flight() uint32 { return uint32(t.sndMax - t.sndUna) }

// finAcked reports whether our FIN has been acknowledged.
func (t *TCB) finAcked() bool { return t.finSent && t.sndUna.GreaterThan(t.finSeq) }

// processAck is the ESTABLISHED processing of the fifth step of RFC 9293
// §3.10.7.4, shared by the states that follow it.
func (t *TCB) processAck(seg *Segment) {
	oldWnd := t.sndWnd
	if seg.Ack.GreaterThan(t.sndUna) {
		t.ackNewData(seg)
	} else if t.isDupAck(seg, oldWnd) {
		t.onDupAck()
	}
	// "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be
	// updated."
	if seg.Ack.GreaterEq(t.sndUna) {
		t.updateSendWindow(seg)
	}
}

// isDupAck is the definition of RFC 5681 §2 "DUPLICATE ACKNOWLEDGMENT".
func (t *TCB) isDupAck(seg *Segment, oldWnd uint32) bool {
	return seg.Ack == t.sndUna && // (d)
		t.sndNxt != t.sndUna && t.sndMax != t.sndUna && // (a) data outstanding
		len(seg.Payload) == 0 && // (b)
		seg.Flags&(packet.SYN|packet.FIN) == 0 && // (c)
		uint32(seg.Wnd)<<t.sndShift == oldWnd && oldWnd != 0 // (e)
}

// updateSendWindow applies the SND.WL1/SND.WL2 rule of §3.10.7.4.
func (t *TCB) updateSendWindow(seg *Segment) {
	if !(t.sndWl1.LessThan(seg.Seq) || (t.sndWl1 == seg.Seq && t.sndWl2.LessEq(seg.Ack))) {
		return
	}
	t.sndWnd = uint32(seg.Wnd) << t.sndShift
	t.sndWl1, t.sndWl2 = seg.Seq, seg.Ack
	t.maxSndWnd = max(t.maxSndWnd, t.sndWnd)
	if t.sndWnd != 0 {
		t.persistAt, t.persistBackoff = time.Time{}, 0
	}
}

// ackNewData handles SND.UNA < SEG.ACK =< SND.NXT.
func (t *TCB) ackNewData(seg *Segment) {
	acked := uint32(seg.Ack - t.sndUna)
	data := acked
	if t.sndUna == t.iss && data > 0 { // the SYN takes one sequence number
		data--
	}
	if t.finSent && seg.Ack.GreaterThan(t.finSeq) && data > 0 { // so does the FIN
		data--
	}
	t.sndBuf.discard(int(data))
	t.sndUna = seg.Ack
	if t.sndNxt.LessThan(t.sndUna) {
		t.sndNxt = t.sndUna
	}
	if data > 0 {
		t.events |= EventWritable
	}
	sample := t.takeRTTSample(seg)
	t.backoff, t.rtoRetries = 0, 0 // RFC 6298 §5.7 note: a new ACK ends the backoff
	partial := t.onAckRecovery(acked, sample)
	switch {
	case t.sndUna == t.sndMax:
		t.rtoAt = time.Time{} // RFC 6298 §5.2
	case partial && t.partialSeen:
		// RFC 6582 §3.2 step 5: only the first partial ACK restarts the
		// timer ("Impatient" variant).
	default:
		t.armRTO() // RFC 6298 §5.3
	}
}

// takeRTTSample measures the RTT from this ACK: from the echoed timestamp
// when timestamps are on (RFC 7323 §4.1), else from the one timed segment
// (Karn, RFC 6298 §3). It returns the sample or -1.
func (t *TCB) takeRTTSample(seg *Segment) time.Duration {
	var r time.Duration = -1
	switch {
	case t.tsOK && seg.Opts.HasTS && seg.Opts.TSEcr != 0:
		if d := int32(t.tsNow() - seg.Opts.TSEcr); d >= 0 {
			r = time.Duration(d) * time.Millisecond
		}
	case t.timing && seg.Ack.GreaterThan(t.timedSq):
		r = t.now.Sub(t.timedAt)
	}
	if seg.Ack.GreaterThan(t.timedSq) {
		t.timing = false
	}
	if r >= 0 {
		t.rttSample(r)
	}
	return r
}

// onAckRecovery feeds a cumulative ACK of new data to loss recovery and
// the controller. It reports a partial ACK (RFC 6582 §3.2 step 5).
func (t *TCB) onAckRecovery(acked uint32, sample time.Duration) bool {
	t.dupAcks = 0
	if !t.inRecovery {
		t.cc.onAck(acked, t.srtt, t.now)
		return false
	}
	if t.sndUna.GreaterEq(t.recover) {
		// Full acknowledgment (RFC 6582 §3.2 step 3): cwnd = ssthresh, with
		// a burst limit because little may be outstanding.
		t.inRecovery = false
		t.cc.onExitRecovery(t.now)
		t.burst = maxBurst
		return false
	}
	// Partial acknowledgment: the next hole is lost too; resend it, and
	// the controller deflates by what was acknowledged (RFC 6582 §3.2
	// step 3, partial acknowledgments).
	t.rtxOne = true
	t.cc.onRecoveryAck(acked)
	first := !t.partialSeen
	t.partialSeen = true
	if first {
		t.armRTO()
	}
	return true
}

// onDupAck counts duplicate ACKs; the third starts fast retransmit and
// fast recovery (RFC 5681 §3.2 steps 2-4, RFC 6582 §3.2 steps 2-4).
func (t *TCB) onDupAck() {
	t.count(func(c *Counters) *atomic.Uint64 { return &c.DupAcks })
	t.dupAcks++
	if t.inRecovery {
		t.cc.onDupAck() // RFC 5681 §3.2 step 4: inflate by one SMSS
		return
	}
	if t.dupAcks != 3 || t.sndUna.LessThan(t.recover) {
		// Before the third, or (RFC 6582 §3.2 step 2) the ACK does not
		// cover the previous recovery point: no new recovery.
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.FastRetransmits })
	t.cc.onEnterRecovery(t.now, t.flight())
	for range 3 { // RFC 5681 §3.2 step 3: cwnd = ssthresh + 3*SMSS
		t.cc.onDupAck()
	}
	t.inRecovery, t.partialSeen = true, false
	t.recover = t.sndMax
	t.rtxOne = true
	t.timing = false
}

// exitRecoveryOnRTO ends fast recovery after a timeout (RFC 6582 §4:
// recover is set to the highest sequence number sent).
func (t *TCB) exitRecoveryOnRTO() {
	t.inRecovery, t.dupAcks, t.rtxOne = false, 0, false
	t.recover = t.sndMax
}
