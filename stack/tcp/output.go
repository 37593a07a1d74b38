package tcp

import (
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// Option bytes that reduce the payload of a full-sized segment.
const (
	tsOptLen       = 12 // NOP NOP kind len TSval TSecr (RFC 7323 Appendix A)
	sackOptHdrLen  = 4  // NOP NOP kind len
	sackOptBlkLen  = 8
	maxSACKWithTS  = 3 // 40 - 12 - 4 leaves room for three blocks
	maxSACKBlocks  = packet.MaxSACKBlocks
	maxWindowField = 0xffff
)

// Output hands every segment due now to emit, in order: a pending RST,
// the SYN or SYN-ACK, retransmissions, new data and FIN as windows and
// Nagle allow, probes, and finally a pure ACK if one is still owed. The
// *Segment and its payload are valid only during the emit call (the
// engine serialises them into a packet there). Output does not allocate.
func (t *TCB) Output(now time.Time, emit func(*Segment)) {
	t.now = now
	if t.rstDue {
		t.rstDue = false
		t.emitRST(emit)
	}
	switch t.state {
	case Closed, Listen:
		return
	case SynSent:
		if t.synDue {
			t.emitSyn(emit, packet.SYN)
		}
		return
	case SynReceived:
		if t.synDue {
			t.emitSyn(emit, packet.SYN|packet.ACK)
		}
	case TimeWait:
	default:
		t.outputData(emit)
	}
	if t.kaDue {
		t.kaDue = false
		t.count(func(c *Counters) *atomic.Uint64 { return &c.KeepalivesSent })
		// RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1 makes the peer answer.
		t.emitSeg(emit, t.sndMax.Add(^uint32(0)), packet.ACK, nil)
	}
	if t.ackNow {
		t.emitSeg(emit, t.sndMax, packet.ACK, nil)
	}
}

// emitSyn sends our SYN (active open) or SYN-ACK with the options of RFC
// 9293 §3.7.1, RFC 7323 and RFC 2018.
func (t *TCB) emitSyn(emit func(*Segment), flags packet.TCPFlags) {
	t.synDue = false
	if t.rtoRetries > 0 && flags&packet.ACK != 0 {
		t.count(func(c *Counters) *atomic.Uint64 { return &c.SynAckRetransmits })
	}
	s := &t.out
	*s = Segment{Seq: t.iss, Flags: flags}
	o := &s.Opts
	o.MSS, o.HasMSS = uint16(min(t.cfg.MSS, 0xffff)), true
	active := flags == packet.SYN
	if (active && t.cfg.WindowScale) || t.wsOK {
		o.WScale, o.HasWScale = t.rcvShift, true
	}
	o.SACKPermitted = (active && t.cfg.SACK) || t.sackOK
	if (active && t.cfg.Timestamps) || t.tsOK {
		o.TSVal, o.HasTS = t.tsNow(), true
		if t.tsOK {
			o.TSEcr = t.tsRecent
		}
	}
	if flags&packet.ACK != 0 {
		s.Ack = t.rcvNxt
		t.lastAckSent, t.ackNow = t.rcvNxt, false
	}
	// RFC 7323 §2.2: the window of a SYN is never scaled.
	wnd := uint32(min(t.rcvBuf.free(), maxWindowField))
	s.Wnd = uint16(wnd)
	if flags&packet.ACK != 0 && t.rcvAdv.LessThan(t.rcvNxt.Add(wnd)) {
		t.rcvAdv = t.rcvNxt.Add(wnd)
	}
	t.sndNxt, t.sndMax = t.iss.Add(1), t.iss.Add(1)
	if t.rtoRetries == 0 {
		t.timing, t.timedSq, t.timedAt = true, t.iss, t.now
	}
	t.armRTOIfIdle()
	t.trace(TraceSegOut, s, "")
	emit(s)
}

// emitRST sends the queued reset.
func (t *TCB) emitRST(emit func(*Segment)) {
	t.count(func(c *Counters) *atomic.Uint64 { return &c.RSTsSent })
	s := &t.out
	*s = t.rst
	if t.tsOK {
		// RFC 7323 §3.2: timestamps SHOULD be sent on a RST too.
		s.Opts.TSVal, s.Opts.TSEcr, s.Opts.HasTS = t.tsNow(), t.tsRecent, true
	}
	t.trace(TraceSegOut, s, "")
	emit(s)
}

// emitSeg sends a segment of a synchronized connection: ACK of RCV.NXT,
// our window, timestamps and SACK blocks.
func (t *TCB) emitSeg(emit func(*Segment), seq Seq, flags packet.TCPFlags, payload []byte) {
	s := &t.out
	s.Seq, s.Ack, s.Flags, s.Payload = seq, t.rcvNxt, flags, payload
	t.fillOptions(&s.Opts)
	s.Wnd = t.windowField()
	t.lastAckSent = t.rcvNxt
	t.ackNow, t.ackPending, t.delackAt = false, 0, time.Time{}
	t.trace(TraceSegOut, s, "")
	emit(s)
}

// fillOptions sets the options of a non-SYN segment: timestamps (RFC 7323
// §3.2: on every segment once negotiated) and SACK blocks (RFC 2018 §4:
// in every ACK while out-of-order data is held).
func (t *TCB) fillOptions(o *packet.TCPOptions) {
	*o = packet.TCPOptions{}
	if t.tsOK {
		o.TSVal, o.TSEcr, o.HasTS = t.tsNow(), t.tsRecent, true
	}
	if t.sackOK && t.ooo.n > 0 {
		blocks := o.SACKBlocks[:maxSACKBlocks]
		if t.tsOK {
			blocks = blocks[:maxSACKWithTS]
		}
		o.NumSACK = t.ooo.sack(blocks)
	}
}

// optionsLen is how many option bytes the next data segment carries.
func (t *TCB) optionsLen() uint32 {
	var n uint32
	if t.tsOK {
		n += tsOptLen
	}
	if t.sackOK && t.ooo.n > 0 {
		k := min(t.ooo.n, maxSACKBlocks)
		if t.tsOK {
			k = min(k, maxSACKWithTS)
		}
		n += sackOptHdrLen + sackOptBlkLen*uint32(k)
	}
	return n
}

// effMSS is Eff.snd.MSS of RFC 9293 §3.7.1: the MSS less the options the
// segment carries.
func (t *TCB) effMSS() uint32 { return max(t.sndMSS-t.optionsLen(), 1) }

// windowField computes the window to announce: it moves the advertised
// right edge forward when receiver SWS avoidance allows (RFC 9293
// §3.8.6.2.2), never backward, and scales it (RFC 7323 §2.3).
func (t *TCB) windowField() uint16 {
	t.advanceRcvWindow()
	return uint16(min(t.rcvWnd()>>t.rcvShift, maxWindowField))
}

// advanceRcvWindow moves RCV.NXT+RCV.WND to the free space when the move
// is worth it: at least min(buffer/2, MSS) (the Fr = 1/2 rule of RFC 9293
// §3.8.6.2.2). The right edge is never moved left (RFC 9293 §3.8.6 SHLD-14).
func (t *TCB) advanceRcvWindow() {
	right := t.rcvNxt.Add(t.rcvSpace())
	if !right.GreaterThan(t.rcvAdv) {
		return
	}
	inc := uint32(right - t.rcvAdv)
	if inc >= min(uint32(t.rcvBuf.cap()/2), t.sndMSS) || t.rcvAdv.LessEq(t.rcvNxt) && inc >= t.sndMSS/2 {
		t.rcvAdv = right
	}
}

// rcvSpace is the window the free buffer could support, within what the
// scaled field can express.
func (t *TCB) rcvSpace() uint32 {
	free := uint32(t.rcvBuf.free())
	return min(free, maxWindowField<<t.rcvShift)
}

// outputData sends the fast retransmission, then new or go-back-N data
// and the FIN while the windows allow, then a persist probe if due.
func (t *TCB) outputData(emit func(*Segment)) {
	if t.rtxOne {
		t.rtxOne = false
		t.retransmitFirst(emit)
	}
	for t.sendNext(emit) {
	}
	t.burst = -1
	if t.probeDue {
		t.probeDue = false
		t.sendProbe(emit)
	}
	t.maybeArmPersist()
}

// dataOff is the send-buffer offset of sequence number s.
func (t *TCB) dataOff(s Seq) int { return int(uint32(s - t.sndUna)) }

// retransmitFirst resends one segment at SND.UNA (RFC 5681 §3.2 step 2,
// RFC 6582 §3.2 step 5) without moving SND.NXT.
func (t *TCB) retransmitFirst(emit func(*Segment)) {
	n := min(t.sndBuf.len(), int(t.effMSS()))
	fin := t.finSent && n == t.sndBuf.len()
	if n == 0 && !fin {
		return
	}
	t.sendSegment(emit, t.sndUna, n, fin)
}

// hasUnsent reports whether buffered data lies beyond SND.NXT.
func (t *TCB) hasUnsent() bool { return t.dataOff(t.sndNxt) < t.sndBuf.len() }

// sendNext sends one segment from SND.NXT if the windows, Nagle and
// sender SWS avoidance allow it, and reports whether it did.
func (t *TCB) sendNext(emit func(*Segment)) bool {
	off := t.dataOff(t.sndNxt)
	avail := t.sndBuf.len() - off
	finNext := t.finQueued && !(t.finSent && t.sndNxt.GreaterThan(t.finSeq))
	if avail < 0 || (avail == 0 && !finNext) {
		return false
	}
	wnd := min(t.sndWnd, t.cc.cwnd())
	usable := 0
	if edge := t.sndUna.Add(wnd); edge.GreaterThan(t.sndNxt) {
		usable = int(uint32(edge - t.sndNxt))
	}
	mss := int(t.effMSS())
	n := min(avail, mss, usable)
	fin := finNext && n == avail
	if n == 0 && !fin {
		return false
	}
	if n < mss && !fin && t.sndNxt.GreaterEq(t.sndMax) && !t.canSendSmall(n, avail) {
		return false
	}
	if t.burst == 0 {
		return false
	}
	if t.burst > 0 {
		t.burst--
	}
	t.restartAfterIdle()
	t.sendSegment(emit, t.sndNxt, n, fin)
	t.sndNxt = t.sndNxt.Add(uint32(n))
	if fin {
		t.sndNxt = t.sndNxt.Add(1)
	}
	t.sndMax = t.sndMax.Max(t.sndNxt)
	return true
}

// canSendSmall decides on a segment shorter than the MSS: Nagle (RFC 9293
// §3.7.4: hold it while data is unacknowledged, unless NoDelay) and sender
// SWS avoidance (§3.8.6.2.1: send when all queued data fits, or at least
// half the largest window the peer offered). forceSmall is the override
// timeout of §3.8.6.2.1 (4), set by the persist timer.
func (t *TCB) canSendSmall(n, avail int) bool {
	if t.forceSmall {
		t.forceSmall = false
		return true
	}
	idle := t.sndUna == t.sndMax || t.cfg.NoDelay
	return idle && (n == avail || uint32(n) >= t.maxSndWnd/2)
}

// sendSegment emits n bytes (and the FIN) starting at seq.
func (t *TCB) sendSegment(emit func(*Segment), seq Seq, n int, fin bool) {
	payload := t.scratch[:n]
	t.sndBuf.peekAt(t.dataOff(seq), payload)
	flags := packet.ACK
	if n > 0 && t.dataOff(seq)+n == t.sndBuf.len() {
		flags |= packet.PSH
	}
	if fin {
		flags |= packet.FIN
		if !t.finSent {
			t.finSent, t.finSeq = true, seq.Add(uint32(n))
		}
	}
	if seq.LessThan(t.sndMax) {
		t.count(func(c *Counters) *atomic.Uint64 { return &c.Retransmits })
		t.timing = false // Karn: never time a retransmission
	} else if !t.timing && n > 0 {
		t.timing, t.timedSq, t.timedAt = true, seq, t.now
	}
	t.emitSeg(emit, seq, flags, payload)
	t.persistAt, t.persistBackoff = time.Time{}, 0
	t.armRTOIfIdle() // RFC 6298 §5.1
}

// maybeArmPersist starts the persist timer when data waits, nothing is in
// flight and nothing could be sent: the peer's window is zero (RFC 9293
// §3.8.6.1) or too small for sender SWS avoidance (the override timeout
// of §3.8.6.2.1).
func (t *TCB) maybeArmPersist() {
	if !t.persistAt.IsZero() || !t.rtoAt.IsZero() || t.sndNxt != t.sndUna || !t.hasUnsent() {
		return
	}
	t.armPersist()
}

// sendProbe sends a zero-window probe: one octet at SND.NXT (RFC 9293
// §3.8.6.1), or, when the window is open but Nagle/SWS held a small
// segment, forces that segment out.
func (t *TCB) sendProbe(emit func(*Segment)) {
	if !t.hasUnsent() {
		return
	}
	if t.sndWnd != 0 {
		t.forceSmall = true
		t.sendNext(emit)
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.PersistProbes })
	payload := t.scratch[:1]
	t.sndBuf.peekAt(t.dataOff(t.sndNxt), payload)
	// SND.NXT stays: the octet is outside the window and may be refused.
	// SND.MAX covers it so that an ACK of it is acceptable.
	t.sndMax = t.sndMax.Max(t.sndNxt.Add(1))
	t.emitSeg(emit, t.sndNxt, packet.ACK, payload)
}

// restartAfterIdle lets the controller shrink cwnd when nothing was sent
// for longer than the RTO (RFC 5681 §4.1).
func (t *TCB) restartAfterIdle() {
	if t.sndUna == t.sndMax && !t.lastSendAt.IsZero() {
		t.cc.onSendAfterIdle(t.now, t.now.Sub(t.lastSendAt), t.currentRTO())
	}
	t.lastSendAt = t.now
}
