package tcp

import (
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// maxBurst bounds the segments sent in one go after fast recovery ends
// (RFC 6582 §3.2 step 3 option 2 asks for a burst limit).
const maxBurst = 4

// dupThresh is DupThresh of RFC 6675 §2 and RFC 5681 §3.2: the duplicate
// ACKs that signal a loss.
const dupThresh = 3

// recovery is the sender's loss-recovery state: RFC 6675 (SACK-based) when
// SACK was negotiated, RFC 5681 §3.2 with RFC 6582 (NewReno) otherwise.
type recovery struct {
	cc         congestionControl
	dupAcks    int
	inRecovery bool
	// sackRecovery says the current recovery follows RFC 6675: pipe and
	// NextSeg decide what is sent, cwnd is not inflated.
	sackRecovery bool
	// recover is RFC 6582's "recover" and RFC 6675's RecoveryPoint: one
	// past the highest sequence number sent when recovery (or the last
	// timeout) began; a new recovery waits until SND.UNA reaches it.
	recover     Seq
	partialSeen bool
	burst       int        // segments Output may still send at once; <0 unlimited
	lastSendAt  clock.Time // for the RFC 5681 §4.1 restart window

	// RFC 6675 §2 variables, exclusive like the scoreboard's ranges (the
	// scoreboard is TCB.sb): highRxt is one past HighRxt, rescueRxt one
	// past RescueRxt.
	highRxt   Seq
	rescueRxt Seq
	// rtxMark is SND.MAX when the latest retransmission of this recovery
	// went out; rtxMarked says one did (see lostRetransmissions).
	rtxMark   Seq
	rtxMarked bool
}

// initCC creates the congestion controller once the MSS is known. An
// unknown name falls back to the default (Config validation is the
// engine's job; the TCB must not fail here).
func (t *TCB) initCC(now clock.Time) {
	if t.cc != nil {
		return
	}
	smss := t.smss()
	cc, err := newCongestionControl(t.cfg.CongestionControl, smss, now)
	if err != nil {
		cc, _ = newCongestionControl("", smss, now)
	}
	t.cc = cc
}

// smss is SMSS (RFC 5681 §2): the MSS less the timestamp option every
// segment carries; the controller and RFC 6675's IsLost count in it.
func (t *TCB) smss() uint32 {
	if t.tsOK {
		return max(t.sndMSS-tsOptLen, 1)
	}
	return t.sndMSS
}

// flight is FlightSize (RFC 5681 §2): sent and not yet acknowledged.
func (t *TCB) flight() uint32 { return uint32(t.sndMax - t.sndUna) }

// finAcked reports whether our FIN has been acknowledged.
func (t *TCB) finAcked() bool { return t.finSent && t.sndUna.GreaterThan(t.finSeq) }

// processAck is the ESTABLISHED processing of the fifth step of RFC 9293
// §3.10.7.4, shared by the states that follow it.
func (t *TCB) processAck(seg *Segment) {
	oldWnd := t.sndWnd
	advanced := seg.Ack.GreaterThan(t.sndUna)
	dup := !advanced && t.isDupAck(seg, oldWnd)
	if t.sackOK && (seg.Opts.NumSACK > 0 || t.sacked()) {
		// RFC 6675 §5: "Upon the receipt of any ACK containing SACK
		// information, the scoreboard MUST be updated via the Update ()
		// routine"; Update also forgets what the ACK covers.
		blocks := seg.Opts.SACKBlocks[:min(int(seg.Opts.NumSACK), len(seg.Opts.SACKBlocks))]
		newly := t.updateScoreboard(seg.Ack.Max(t.sndUna), blocks)
		if len(blocks) > 0 {
			// RFC 6675 §2: with SACK, an ACK is a duplicate when it
			// SACKs octets not SACKed before, whatever else it does. An
			// ACK without blocks keeps RFC 5681's definition, so a peer
			// that negotiates SACK but never sends blocks still gets
			// fast retransmit.
			dup = newly > 0
		}
	}
	if t.tlpActive && seg.Ack.GreaterEq(t.tlpEnd) {
		t.tlpProcessAck(seg, advanced)
	}
	if advanced {
		t.ackNewData(seg) // RFC 6675 §5: a cumulative ACK resets DupAcks
		t.tlpRearm = true
	}
	if dup {
		t.onDupAck()
	}
	t.lostRetransmissions()
	if t.sacked() {
		t.ptoAt = 0 // RFC 8985 §7.2: SACKed data outstanding, no probe
	}
	// "If SND.UNA =< SEG.ACK =< SND.NXT, the send window should be
	// updated."
	if seg.Ack.GreaterEq(t.sndUna) {
		t.updateSendWindow(seg)
	}
}

// sacked reports whether the scoreboard holds SACKed ranges.
func (t *TCB) sacked() bool { return t.sb != nil && t.sb.n > 0 }

// updateScoreboard runs the scoreboard's Update with una as HighACK and
// returns the bytes newly SACKed. The scoreboard is allocated when a
// block could be recorded: with nothing outstanding above una, Update
// would ignore every block (each ends at or below una or beyond SND.MAX).
func (t *TCB) updateScoreboard(una Seq, blocks []packet.SACKBlock) uint32 {
	if t.sb == nil {
		if len(blocks) == 0 || !una.LessThan(t.sndMax) {
			return 0
		}
		t.sb = new(scoreboard)
	}
	return t.sb.update(una, t.sndMax, blocks)
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
		t.persistAt, t.persistBackoff = 0, 0
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
	if t.sndBuf.len() == 0 {
		t.sndEmptied()
	}
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
		t.rtoAt = 0 // RFC 6298 §5.2
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
		// Full acknowledgment (RFC 6582 §3.2 step 3, RFC 6675 §5 (A)):
		// cwnd = ssthresh, with a burst limit because little may be
		// outstanding. RFC 6675 (A): the scoreboard above SND.UNA is kept.
		t.inRecovery, t.sackRecovery, t.rtxMarked = false, false, false
		t.cc.onExitRecovery(t.now)
		t.burst = maxBurst
		return false
	}
	if t.sackRecovery {
		// RFC 6675 (B): the scoreboard already has this ACK's blocks and
		// Output runs step (C). The timer restarts as RFC 6298 §5.3 says
		// (RFC 6675 §6 leaves the choice to the implementation).
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

// onDupAck counts duplicate ACKs and starts loss recovery: with SACK as
// RFC 6675 §5 says, otherwise fast retransmit and fast recovery on the
// third (RFC 5681 §3.2 steps 2-4, RFC 6582 §3.2 steps 2-4).
func (t *TCB) onDupAck() {
	t.count(func(c *Counters) *atomic.Uint64 { return &c.DupAcks })
	if t.inRecovery {
		if !t.sackRecovery {
			t.cc.onDupAck() // RFC 5681 §3.2 step 4: inflate by one SMSS
		}
		return // RFC 6675 §5 counts DupAcks only outside recovery
	}
	t.dupAcks++
	if t.sndUna.LessThan(t.recover) {
		// RFC 6582 §3.2 step 2, RFC 6675 §5.1: the ACK does not cover the
		// previous recovery point (or timeout): no new recovery.
		return
	}
	if t.sackOK && t.sacked() {
		t.maybeEnterSACKRecovery()
		return
	}
	// Without SACK, or when the peer negotiated it but reports no blocks:
	// NewReno.
	if t.dupAcks != dupThresh {
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.FastRetransmits })
	// FlightSize without the Limited Transmit segments (RFC 5681 §3.2
	// step 2): capped at cwnd, as for SACK recovery.
	t.cc.onEnterRecovery(t.now, min(t.flight(), t.cc.cwnd()))
	for range dupThresh { // RFC 5681 §3.2 step 3: cwnd = ssthresh + 3*SMSS
		t.cc.onDupAck()
	}
	t.inRecovery, t.partialSeen = true, false
	t.recover = t.sndMax
	t.rtxOne = true
	t.timing = false
	t.resetTLP() // RFC 8985 §7.1: fast recovery
}

// lostRetransmissions finds retransmissions of a SACK recovery that were
// lost too. RFC 6675 sends a hole once (NextSeg () starts above HighRxt),
// so a lost retransmission waits for the RTO. When more than
// (DupThresh - 1) * SMSS bytes sent after the latest retransmission have
// been SACKed while holes below HighRxt are still missing, those
// retransmissions are deemed lost by the same rule IsLost () applies to
// first transmissions (RFC 6675 §4), as RACK would by their send times
// (RFC 8985 §6): HighRxt goes back to HighACK and NextSeg () rule (1)
// sends them again. No second window reduction follows: the loss belongs
// to the recovery already under way (RFC 5681 §3.2, RFC 6675 §5).
func (t *TCB) lostRetransmissions() {
	if !t.rtxMarked || !t.inRecovery || !t.sackRecovery || !t.sacked() || !t.sndUna.LessThan(t.highRxt) {
		return
	}
	if t.sb.sackedIn(t.rtxMark, t.sndMax) <= uint32(dupThresh-1)*t.smss() {
		return
	}
	if hs, _ := t.sb.hole(t.sndUna, t.highRxt); !hs.LessThan(t.highRxt) {
		return // every retransmitted byte arrived
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.LostRetransmits })
	t.highRxt, t.rtxMarked = t.sndUna, false
}

// maybeEnterSACKRecovery is RFC 6675 §5 steps (1), (2) and (4) for a
// duplicate ACK outside recovery. Step (3), Limited Transmit governed by
// pipe, is sendRoom's.
func (t *TCB) maybeEnterSACKRecovery() {
	// (1) DupAcks >= DupThresh, or (2) IsLost(HighACK+1).
	if t.dupAcks < dupThresh && !t.sb.isLost(t.sndUna, t.smss(), dupThresh) {
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.FastRetransmits })
	// (4.2) ssthresh = cwnd = FlightSize/2 (the controller's reduction).
	// FlightSize is capped at cwnd: RFC 5681 §3.2 leaves segments sent by
	// Limited Transmit out of it, and after an earlier recovery SACKed
	// bytes may still count in SND.MAX - SND.UNA; neither may make a loss
	// raise the window.
	t.cc.onEnterRecovery(t.now, min(t.flight(), t.cc.cwnd()))
	t.inRecovery, t.sackRecovery, t.partialSeen = true, true, false
	t.sndNxt = t.sndMax  // HighData is SND.MAX (a probe may leave SND.NXT behind)
	t.recover = t.sndMax // (4.1) RecoveryPoint = HighData
	// (4.3) is the first segment Output sends: rtxOne. It sets HighRxt and
	// RescueRxt to the end of what it retransmits.
	t.highRxt, t.rescueRxt = t.sndUna, t.sndUna
	t.rtxOne = true
	t.timing = false
	t.resetTLP() // RFC 8985 §7.1: fast recovery
}

// exitRecoveryOnRTO ends loss recovery after a timeout: recover is set to
// the highest sequence number sent (RFC 6582 §4, RFC 6675 §5.1). The SACK
// scoreboard is expunged since the timeout may mean the receiver reneged
// (RFC 2018 §8, which RFC 6675 §5.1 keeps); later ACKs fill it again and
// go-back-N skips what they SACK.
func (t *TCB) exitRecoveryOnRTO() {
	t.inRecovery, t.sackRecovery, t.dupAcks, t.rtxOne, t.rtxMarked = false, false, 0, false, false
	t.recover = t.sndMax
	if t.sb != nil {
		t.sb.reset()
	}
}
