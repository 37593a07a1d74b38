package tcp

import (
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// Drop reasons. Each dropped segment is reported with exactly one.
const (
	dropClosed               = "connection is CLOSED"
	dropSynSentBadAck        = "SYN-SENT: ACK outside (ISS, SND.NXT]"
	dropSynSentRST           = "SYN-SENT: RST without acceptable ACK"
	dropSynSentNoCtl         = "SYN-SENT: neither SYN nor RST"
	dropDupSyn               = "SYN-RECEIVED: retransmitted SYN, SYN-ACK resent"
	dropNoTimestamp          = "timestamps negotiated but segment has none (RFC 7323 §3.2)"
	dropPAWS                 = "PAWS: TSval older than TS.Recent (RFC 7323 §5.3)"
	dropOutOfWindow          = "sequence number not acceptable (RFC 9293 §3.10.7.4)"
	dropRSTOutOfWindow       = "RST outside the receive window (RFC 5961 §3.2)"
	dropTimeWaitFIN          = "TIME-WAIT: retransmitted FIN, ACK sent and 2MSL restarted"
	dropTimeWaitRST          = "TIME-WAIT: RST ignored (RFC 1337)"
	dropRSTChallenge         = "RST in window but not at RCV.NXT: challenge ACK (RFC 5961 §3.2)"
	dropSYNChallenge         = "SYN in synchronized state: challenge ACK (RFC 5961 §4.2)"
	dropAckChallenge         = "ACK outside [SND.UNA-MAX.SND.WND, SND.NXT]: ACK sent (RFC 5961 §5.2)"
	dropChallengeLimit       = "challenge ACK suppressed by rate limit (RFC 5961 §7)"
	dropChallengeGlobalLimit = "challenge ACK suppressed by the limit across connections (RFC 5961 §7)"
	dropNoACK                = "ACK bit off (RFC 9293 §3.10.7.4 fifth step)"
	dropSynRcvdBadAck        = "SYN-RECEIVED: unacceptable ACK, RST sent"
	dropClosingNotFin        = "CLOSING: ACK does not cover our FIN"
	dropOOOFull              = "out-of-order segment needs more ranges than kept"
	dropDataAfterClose       = "data after Close: connection reset (RFC 1122 §4.2.2.13)"
	dropOldDuplicate         = "segment holds nothing new (duplicate)"
)

// Input processes one inbound segment addressed to this connection (RFC
// 9293 §3.10.7). seg and its payload are only read during the call. Call
// Output afterwards to collect what is due, and Events to learn what
// changed for the application.
func (t *TCB) Input(seg *Segment, now clock.Time) {
	t.now = now
	t.trace(TraceSegIn, seg, "")
	switch t.state {
	case Closed, Listen:
		// The engine answers segments for unknown connections (§3.10.7.1).
		t.drop(seg, dropClosed)
	case SynSent:
		t.inputSynSent(seg)
	default:
		t.inputOther(seg)
	}
}

// inputSynSent follows RFC 9293 §3.10.7.3.
func (t *TCB) inputSynSent(seg *Segment) {
	ackOK := false
	if seg.Has(packet.ACK) {
		// First, check the ACK bit.
		if seg.Ack.LessEq(t.iss) || seg.Ack.GreaterThan(t.sndMax) {
			if !seg.Has(packet.RST) {
				t.queueRST(seg.Ack, 0, false)
			}
			t.drop(seg, dropSynSentBadAck)
			return
		}
		ackOK = true
	}
	if seg.Has(packet.RST) { // second, check the RST bit
		if !ackOK {
			t.drop(seg, dropSynSentRST)
			return
		}
		t.count(func(c *Counters) *atomic.Uint64 { return &c.RSTsReceived })
		t.close(ErrConnRefused, "connection refused: RST in SYN-SENT")
		return
	}
	if !seg.Has(packet.SYN) { // fifth
		t.drop(seg, dropSynSentNoCtl)
		return
	}
	// Fourth, check the SYN bit.
	t.irs, t.rcvNxt = seg.Seq, seg.Seq.Add(1)
	t.negotiate(&seg.Opts)
	if !t.wsOK {
		t.rcvShift = 0
	}
	if t.tsOK {
		t.tsRecent, t.tsRecentAt, t.tsRecentSet = seg.Opts.TSVal, t.now, true
	}
	// Our SYN advertised this much, unscaled (RFC 7323 §2.2).
	t.rcvAdv = t.rcvNxt.Add(uint32(min(t.rcvBuf.cap(), 0xffff)))
	t.lastAckSent = t.rcvNxt
	// RFC 7323 §2.2: the window of a SYN-ACK is never scaled.
	t.sndWnd, t.maxSndWnd = uint32(seg.Wnd), uint32(seg.Wnd)
	t.sndWl1, t.sndWl2 = seg.Seq, seg.Ack
	if !ackOK {
		// Simultaneous open: answer with SYN-ACK from SYN-RECEIVED.
		t.synDue = true
		t.rtoRetries, t.backoff = 0, 0
		t.setState(SynReceived, "SYN received in SYN-SENT")
		return
	}
	t.initCC(t.now)
	t.ackNewData(seg)
	t.rtoAt = 0
	t.ackNow = true
	t.setState(Established, "SYN-ACK received")
	t.armKeepalive()
	t.afterEstablished()
}

// inputOther follows RFC 9293 §3.10.7.4 for SYN-RECEIVED and the
// synchronized states, step by step.
func (t *TCB) inputOther(seg *Segment) {
	if t.state == SynReceived && t.passive && seg.Flags&(packet.SYN|packet.ACK|packet.RST) == packet.SYN && seg.Seq == t.irs {
		// The peer did not get our SYN-ACK: the acknowledgment the first
		// step asks for is the SYN-ACK itself (as Linux does).
		t.synDue = true
		t.drop(seg, dropDupSyn)
		return
	}
	if !t.checkTimestamp(seg) || !t.checkSequence(seg) {
		return
	}
	t.updateTSRecent(seg)
	t.armKeepalive()
	if seg.Has(packet.RST) { // second, check the RST bit
		t.onRST(seg)
		return
	}
	// Third (security) does not apply. Fourth, check the SYN bit.
	if seg.Has(packet.SYN) {
		t.onSYN(seg)
		return
	}
	if !seg.Has(packet.ACK) { // fifth, check the ACK field
		t.drop(seg, dropNoACK)
		return
	}
	if !t.onACK(seg) {
		return
	}
	// Sixth, the URG bit: urgent data is not supported; the octets are
	// delivered in line (RFC 6093 §5 recommends against using it).
	seq, data, fin := t.trim(seg)
	t.onText(seg, seq, data) // seventh
	if fin {                 // eighth
		t.onFINSeen(seq.Add(uint32(len(data))))
	}
	t.deliverOOOFin()
}

// checkTimestamp applies RFC 7323 §3.2 (timestamps required once
// negotiated) and PAWS (§5.3 R1), which precede the sequence check.
func (t *TCB) checkTimestamp(seg *Segment) bool {
	if !t.tsOK || seg.Has(packet.RST) {
		return true
	}
	if !seg.Opts.HasTS {
		t.drop(seg, dropNoTimestamp)
		return false
	}
	if !t.tsRecentValid() || int32(seg.Opts.TSVal-t.tsRecent) >= 0 {
		return true
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.PAWSRejected })
	t.ackNow = true
	t.drop(seg, dropPAWS)
	return false
}

// pawsIdle is when TS.Recent stops being valid (RFC 7323 §5.5: 24 days).
const pawsIdle = 24 * 24 * time.Hour

func (t *TCB) tsRecentValid() bool {
	return t.tsRecentSet && t.now.Sub(t.tsRecentAt) < pawsIdle
}

// updateTSRecent is RFC 7323 §4.3 / §5.3 R3: remember the newest TSval of
// a segment that covers the last ACK we sent.
func (t *TCB) updateTSRecent(seg *Segment) {
	if !t.tsOK || !seg.Opts.HasTS || seg.Has(packet.RST) || seg.Seq.GreaterThan(t.lastAckSent) {
		return
	}
	if !t.tsRecentValid() || int32(seg.Opts.TSVal-t.tsRecent) >= 0 {
		t.tsRecent, t.tsRecentAt, t.tsRecentSet = seg.Opts.TSVal, t.now, true
	}
}

// rcvWnd is RCV.WND: what we advertised beyond RCV.NXT.
func (t *TCB) rcvWnd() uint32 { return uint32(t.rcvAdv - t.rcvNxt) }

// acceptable is the four-case test of RFC 9293 §3.10.7.4 (Table 6).
func (t *TCB) acceptable(seq Seq, n, wnd uint32) bool {
	switch {
	case n == 0 && wnd == 0:
		return seq == t.rcvNxt
	case n == 0:
		return seq.InWindow(t.rcvNxt, wnd)
	case wnd == 0:
		return false
	default:
		return seq.InWindow(t.rcvNxt, wnd) || seq.Add(n-1).InWindow(t.rcvNxt, wnd)
	}
}

// checkSequence is the first step of RFC 9293 §3.10.7.4.
func (t *TCB) checkSequence(seg *Segment) bool {
	wnd := t.rcvWnd()
	if t.acceptable(seg.Seq, seg.Len(), wnd) {
		return true
	}
	if wnd == 0 && seg.Seq == t.rcvNxt && !seg.Has(packet.SYN) {
		// §3.10.7.4: with a zero window "special allowance should be made
		// to accept valid ACKs, URGs, and RSTs": the text is trimmed away
		// later and an ACK re-announces the window.
		return true
	}
	if seg.Has(packet.RST) {
		t.drop(seg, dropRSTOutOfWindow)
		return false
	}
	t.ackNow = true
	if t.state == TimeWait && seg.Has(packet.FIN) && seg.Seq.Add(seg.Len()) == t.rcvNxt {
		// §3.10.7.4 fifth and eighth steps, TIME-WAIT: "the only thing
		// that can arrive in this state is a retransmission of the remote
		// FIN. Acknowledge it, and restart the 2 MSL timeout."
		t.timeWaitAt = t.now.Add(t.cfg.MSL2)
		t.drop(seg, dropTimeWaitFIN)
		return false
	}
	if n := uint32(len(seg.Payload)); n > 0 && seg.Seq.Add(n).LessEq(t.rcvNxt) {
		t.reportDuplicate(seg.Seq, seg.Seq.Add(n))
	}
	t.drop(seg, dropOutOfWindow)
	return false
}

// onRST is the second step with RFC 5961 §3.2 (the sequence number is
// already known to be in the window).
func (t *TCB) onRST(seg *Segment) {
	if t.state == TimeWait {
		// RFC 1337 §3 (fix F1): a RST must not cut TIME-WAIT short.
		t.drop(seg, dropTimeWaitRST)
		return
	}
	if seg.Seq != t.rcvNxt {
		t.challengeAck(seg, dropRSTChallenge)
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.RSTsReceived })
	t.flushQueues()
	switch {
	case t.state == SynReceived && t.passive:
		// "Return this connection to LISTEN": for the engine the flow is
		// gone, and the upstream it opened must be aborted.
		t.close(ErrConnReset, "reset in SYN-RECEIVED")
	case t.state == SynReceived:
		t.close(ErrConnRefused, "connection refused: RST in SYN-RECEIVED")
	default:
		t.close(ErrConnReset, "reset by peer")
	}
}

// onSYN is the fourth step.
func (t *TCB) onSYN(seg *Segment) {
	if t.state == SynReceived && t.passive {
		// §3.10.7.4 fourth step: a passive open returns to LISTEN.
		t.flushQueues()
		t.close(ErrConnReset, "SYN in SYN-RECEIVED")
		t.drop(seg, "SYN-RECEIVED: new SYN in window, connection dropped")
		return
	}
	t.challengeAck(seg, dropSYNChallenge)
}

// challengeAck queues an ACK for seg unless the RFC 5961 §7 limit of
// ChallengeAckLimit per second is used up, and drops seg.
func (t *TCB) challengeAck(seg *Segment, reason string) {
	if lim := t.cfg.ChallengeAckLimit; lim > 0 {
		if t.now.Sub(t.challengeWindow) >= time.Second {
			t.challengeWindow, t.challengeCount = t.now, 0
		}
		if t.challengeCount >= lim {
			t.count(func(c *Counters) *atomic.Uint64 { return &c.ChallengeAcksRateLimited })
			t.drop(seg, dropChallengeLimit)
			return
		}
		t.challengeCount++
	}
	if l := t.cfg.ChallengeAcks; l != nil && !l.allow(t.now) {
		t.count(func(c *Counters) *atomic.Uint64 { return &c.ChallengeAcksRateLimited })
		t.drop(seg, dropChallengeGlobalLimit)
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.ChallengeAcks })
	t.ackNow = true
	t.drop(seg, reason)
}

// onACK is the fifth step. It reports whether processing continues.
func (t *TCB) onACK(seg *Segment) bool {
	if t.state == SynReceived {
		if !seg.Ack.InRange(t.sndUna.Add(1), t.sndMax.Add(1)) {
			// <SEQ=SEG.ACK><CTL=RST>
			t.queueRST(seg.Ack, 0, false)
			t.drop(seg, dropSynRcvdBadAck)
			return false
		}
		t.establish(seg)
	}
	// RFC 5961 §5.2: SND.UNA - MAX.SND.WND <= SEG.ACK <= SND.NXT.
	if seg.Ack.GreaterThan(t.sndMax) || seg.Ack.LessThan(t.sndUna.Add(-t.maxSndWnd)) {
		t.challengeAck(seg, dropAckChallenge)
		return false
	}
	t.processAck(seg)
	switch t.state {
	case FinWait1:
		if t.finAcked() {
			t.setState(FinWait2, "our FIN acknowledged")
		}
	case Closing:
		if !t.finAcked() {
			t.drop(seg, dropClosingNotFin)
			return false
		}
		t.setState(TimeWait, "our FIN acknowledged in CLOSING")
	case LastAck:
		if t.finAcked() {
			t.close(errNormalClose, "our FIN acknowledged in LAST-ACK")
			return false
		}
	}
	return true
}

// establish completes a passive open (fifth step, SYN-RECEIVED).
func (t *TCB) establish(seg *Segment) {
	retried := t.rtoRetries > 0
	t.sndWnd = uint32(seg.Wnd) << t.sndShift
	t.maxSndWnd = max(t.maxSndWnd, t.sndWnd)
	t.sndWl1, t.sndWl2 = seg.Seq, seg.Ack
	t.initCC(t.now)
	t.setState(Established, "ACK of SYN-ACK")
	t.armKeepalive()
	t.ackNewData(seg)
	if retried && !t.hasSample {
		// RFC 6298 §5.7: after a SYN(-ACK) timeout the RTO restarts at 3 s
		// for data unless a sample says otherwise.
		t.rto = max(t.rto, 3*time.Second)
	}
	t.afterEstablished()
}

// afterEstablished runs a CLOSE the application issued before the
// handshake finished (RFC 9293 §3.10.4, SYN-RECEIVED: "queue for
// processing after entering ESTABLISHED state").
func (t *TCB) afterEstablished() {
	if t.finQueued {
		t.setState(FinWait1, "close queued during handshake")
	}
}

// trim cuts the segment text to [RCV.NXT, RCV.NXT+RCV.WND) (§3.10.7.4:
// "trimming off any portions that lie outside the window (including SYN
// and FIN)"). A FIN right at the window's edge is kept: it needs no buffer.
func (t *TCB) trim(seg *Segment) (seq Seq, data []byte, fin bool) {
	seq, data, fin = seg.Seq, seg.Payload, seg.Has(packet.FIN)
	if seq.LessThan(t.rcvNxt) {
		cut := uint32(t.rcvNxt - seq)
		if cut > uint32(len(data)) {
			fin = false // the FIN is old too
			cut = uint32(len(data))
		}
		t.reportDuplicate(seq, seq.Add(cut))
		data, seq = data[cut:], t.rcvNxt
	}
	if room := uint32(t.rcvAdv - seq); uint32(len(data)) > room {
		data, fin = data[:room], false
		t.ackNow = true // tell the peer where the window ends
	}
	return seq, data, fin
}

// flushQueues empties both buffers (RFC 9293 §3.10.7.4: on reset "all
// segment queues should be flushed").
func (t *TCB) flushQueues() {
	t.sndBuf.release()
	t.scratch = nil
	t.rcvBuf.release()
	t.ooo = nil
	t.oooFin = false
}
