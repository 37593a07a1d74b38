package tcp

import (
	"math"
	"sync/atomic"

	"github.com/tungate/tungate/internal/clock"
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
func (t *TCB) Output(now clock.Time, emit func(*Segment)) {
	t.now = now
	if t.finWait2Arm {
		t.finWait2Arm = false
		t.armFinWait2()
	}
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
	if t.tlpRearm {
		t.tlpRearm = false
		t.armPTO()
	}
	if t.bufIdleAt == 0 {
		t.armBufferIdle()
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
	*s = Segment{Seq: t.rstSeq, Ack: t.rstAck, Flags: t.rstFlags}
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
	t.ackNow, t.ackPending, t.delackAt = false, 0, 0
	t.trace(TraceSegOut, s, "")
	emit(s)
	// The payload is a view of the send buffer: it must not keep buffer
	// memory alive once the buffer releases it.
	s.Payload = nil
}

// fillOptions sets the options of a non-SYN segment: timestamps (RFC 7323
// §3.2: on every segment once negotiated) and SACK blocks (RFC 2018 §4:
// in every ACK while out-of-order data is held).
func (t *TCB) fillOptions(o *packet.TCPOptions) {
	*o = packet.TCPOptions{}
	if t.tsOK {
		o.TSVal, o.TSEcr, o.HasTS = t.tsNow(), t.tsRecent, true
	}
	if t.sackOK && (t.ooo.count() > 0 || t.dsackDue) {
		blocks := o.SACKBlocks[:maxSACKBlocks]
		if t.tsOK {
			blocks = blocks[:maxSACKWithTS]
		}
		n := 0
		if t.dsackDue {
			// RFC 2883 §4: the duplicate comes first, in the first
			// segment after it arrived only.
			blocks[0] = packet.SACKBlock{Start: uint32(t.dsackStart), End: uint32(t.dsackEnd)}
			n, t.dsackDue = 1, false
		}
		if t.ooo.count() > 0 {
			n += t.ooo.sack(blocks[n:])
		}
		o.NumSACK = n
	}
}

// reportDuplicate queues a D-SACK block (RFC 2883) for data in [start,
// end) that had arrived before, and acknowledges at once: the sender
// learns its retransmission was spurious (RFC 8985 §7.4.2, and the undo
// and reordering estimates of the peer's stack).
func (t *TCB) reportDuplicate(start, end Seq) {
	if !t.sackOK || !start.LessThan(end) {
		return
	}
	t.dsackDue, t.dsackStart, t.dsackEnd = true, start, end
	t.ackNow = true
}

// optionsLen is how many option bytes the next data segment carries.
func (t *TCB) optionsLen() uint32 {
	var n uint32
	if t.tsOK {
		n += tsOptLen
	}
	k := t.ooo.count()
	if t.dsackDue {
		k++
	}
	if t.sackOK && k > 0 {
		k = min(k, maxSACKBlocks)
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
		t.startRcvRTT()
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
	if t.inRecovery && t.sackRecovery {
		t.sackRecoverySend(emit)
	} else {
		if t.rtxOne {
			t.rtxOne = false
			t.retransmitFirst(emit)
		}
		for t.sendNext(emit) {
		}
		if t.tlpDue {
			t.tlpDue = false
			t.sendLossProbe(emit)
		}
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
	limit := t.skipSacked()
	off := t.dataOff(t.sndNxt)
	avail := t.sndBuf.len() - off
	finNext := t.finQueued && !(t.finSent && t.sndNxt.GreaterThan(t.finSeq))
	if avail < 0 || (avail == 0 && !finNext) {
		return false
	}
	usable := t.sendRoom()
	mss := int(t.effMSS())
	n := min(avail, mss, usable, limit)
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
	t.tlpRearm = true // RFC 8985 §7.2: new data went out
	t.sndNxt = t.sndNxt.Add(uint32(n))
	if fin {
		t.sndNxt = t.sndNxt.Add(1)
	}
	t.sndMax = t.sndMax.Max(t.sndNxt)
	return true
}

// sendRoom is how many octets from SND.NXT the windows allow outside
// SACK recovery: the peer's window, and cwnd less what is in flight. While
// the scoreboard holds SACK information, what is in flight is RFC 6675's
// pipe with HighRxt = HighACK rather than FlightSize: step (3) of §5
// (Limited Transmit "governed by pipe and cwnd"), which also keeps data
// flowing after a recovery ends with SACKed data still outstanding.
func (t *TCB) sendRoom() int {
	var peer uint32
	if edge := t.sndUna.Add(t.sndWnd); edge.GreaterThan(t.sndNxt) {
		peer = uint32(edge - t.sndNxt)
	}
	inFlight := uint32(t.sndNxt - t.sndUna)
	if t.sacked() {
		inFlight = t.sb.pipe(t.sndUna, t.sndNxt, t.sndUna, t.smss(), dupThresh)
	}
	cwnd := t.cc.cwnd()
	if !t.inRecovery && !t.sacked() && t.dupAcks > 0 && t.dupAcks < dupThresh {
		// Limited Transmit without SACK (RFC 5681 §3.2 step 1, RFC 3042
		// §2): the first and second duplicate ACK each let one new
		// segment out, FlightSize up to cwnd + 2*SMSS; cwnd itself is
		// unchanged. (With SACK, pipe does this: RFC 6675 §5 step 3.)
		cwnd += uint32(t.dupAcks) * t.smss()
	}
	if inFlight >= cwnd {
		return 0
	}
	return int(min(peer, cwnd-inFlight))
}

// skipSacked moves SND.NXT over SACKed data while go-back-N resends after
// a timeout (RFC 6675 §5.1: fill in "the sequence space reported as
// missing") and returns how much may follow before the next SACKed range.
func (t *TCB) skipSacked() int {
	if !t.sacked() || !t.sndNxt.LessThan(t.sndMax) {
		return math.MaxInt
	}
	start, end := t.sb.hole(t.sndNxt, t.sndMax)
	t.sndNxt = start
	if end.LessThan(t.sndMax) {
		return int(uint32(end - start))
	}
	return math.MaxInt
}

// sackRecoverySend is RFC 6675 §5 during loss recovery: the fast
// retransmission of step (4.3), then step (C): while cwnd - pipe >= 1
// SMSS, send what NextSeg () chooses, including the rescue retransmission
// of rule (4) once per recovery.
func (t *TCB) sackRecoverySend(emit func(*Segment)) {
	mss := t.effMSS()
	if t.rtxOne {
		// (4.3) Retransmit the segment at HighACK+1 and set HighRxt and
		// RescueRxt to its end.
		t.rtxOne = false
		start, end := t.sb.hole(t.sndUna, t.sndMax)
		if start.LessThan(end) {
			n := t.sendRange(emit, start, min(mss, uint32(end-start)))
			t.highRxt, t.rescueRxt = start.Add(n), start.Add(n)
			t.rtxMark, t.rtxMarked = t.sndMax, true
		}
	}
	smss := t.smss()
	pipe := t.sb.pipe(t.sndUna, t.sndMax, t.highRxt, smss, dupThresh) // (4.4), (B.2) SetPipe ()
	for uint64(pipe)+uint64(smss) <= uint64(t.cc.cwnd()) {            // (C), (C.5)
		start, length, ok := t.sb.nextSeg(t.sndUna, t.sndMax, t.highRxt, smss, dupThresh, t.newDataAvail(mss))
		length = min(length, mss)
		rescue := false
		if !ok && t.sndUna.GreaterThan(t.rescueRxt) {
			// Rule (4): "HighACK is greater than RescueRxt".
			start, length, ok = t.sb.rescueSeg(t.sndUna, t.sndMax, mss)
			rescue = true
		}
		if !ok {
			return // rule (5)
		}
		retransmit := start.LessThan(t.sndMax)
		n := t.sendRange(emit, start, length) // (C.1), (C.3)
		if retransmit {
			t.rtxMark, t.rtxMarked = t.sndMax, true
		}
		switch {
		case rescue:
			t.rescueRxt = t.recover // rule (4): RescueRxt = RecoveryPoint, HighRxt untouched
		case retransmit:
			t.highRxt = t.highRxt.Max(start.Add(n)) // (C.2)
		}
		pipe += n // (C.4)
	}
}

// newDataAvail is how much never-sent sequence space NextSeg () rule (2)
// may send from SND.MAX: a full segment of buffered data the peer's window
// admits; a shorter one only when it is the last of the data and Nagle
// (RFC 9293 §3.7.4: data is always outstanding during recovery) lets it go,
// i.e. with NoDelay or with the FIN behind it; or the FIN alone.
func (t *TCB) newDataAvail(mss uint32) uint32 {
	off := t.dataOff(t.sndMax)
	if off > t.sndBuf.len() {
		return 0 // the FIN has been sent
	}
	avail := uint32(t.sndBuf.len() - off)
	if avail == 0 {
		if t.finQueued && !t.finSent {
			return 1
		}
		return 0
	}
	var room uint32
	if edge := t.sndUna.Add(t.sndWnd); edge.GreaterThan(t.sndMax) {
		room = uint32(edge - t.sndMax)
	}
	n := min(avail, room, mss)
	if n < mss && (n < avail || !(t.finQueued || t.cfg.NoDelay)) {
		return 0 // sender SWS avoidance (RFC 9293 §3.8.6.2.1) or Nagle
	}
	return n
}

// sendRange sends the segment at start, a retransmission below SND.MAX or
// new data at SND.MAX, covering up to length octets of sequence space: the
// data there, and the FIN when the range reaches the end of the data. It
// returns the sequence space sent and moves SND.MAX (and SND.NXT) over new
// data.
func (t *TCB) sendRange(emit func(*Segment), start Seq, length uint32) uint32 {
	dataEnd := t.sndUna.Add(uint32(t.sndBuf.len()))
	var n uint32
	if start.LessThan(dataEnd) {
		n = min(length, uint32(dataEnd-start))
	}
	fin := t.finQueued && start.Add(length).GreaterEq(dataEnd)
	t.lastSendAt = t.now
	t.sendSegment(emit, start, int(n), fin)
	if fin {
		n++
	}
	if end := start.Add(n); end.GreaterThan(t.sndMax) {
		t.sndMax, t.sndNxt = end, end
	}
	return n
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

// payload returns the n buffered bytes at seq: a view of the send buffer,
// or, when they wrap around its end, a copy in scratch (allocated on the
// first wrap, released with the buffer).
func (t *TCB) payload(seq Seq, n int) []byte {
	off := t.dataOff(seq)
	if p, ok := t.sndBuf.view(off, n); ok {
		return p
	}
	if len(t.scratch) < n {
		t.scratch = make([]byte, max(n, int(t.sndMSS)))
	}
	p := t.scratch[:n]
	t.sndBuf.peekAt(off, p)
	return p
}

// sendSegment emits n bytes (and the FIN) starting at seq.
func (t *TCB) sendSegment(emit func(*Segment), seq Seq, n int, fin bool) {
	payload := t.payload(seq, n)
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
		t.countN(func(c *Counters) *atomic.Uint64 { return &c.RetransmittedBytes }, uint64(n))
		t.timing = false // Karn: never time a retransmission
	} else if !t.timing && n > 0 {
		t.timing, t.timedSq, t.timedAt = true, seq, t.now
	}
	t.emitSeg(emit, seq, flags, payload)
	t.persistAt, t.persistBackoff = 0, 0
	t.armRTOIfIdle() // RFC 6298 §5.1
}

// maybeArmPersist starts the persist timer when data waits, nothing is in
// flight and nothing could be sent: the peer's window is zero (RFC 9293
// §3.8.6.1) or too small for sender SWS avoidance (the override timeout
// of §3.8.6.2.1).
func (t *TCB) maybeArmPersist() {
	if t.persistAt != 0 || t.rtoAt != 0 || t.sndNxt != t.sndUna || !t.hasUnsent() {
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
	payload := t.payload(t.sndNxt, 1)
	// SND.NXT stays: the octet is outside the window and may be refused.
	// SND.MAX covers it so that an ACK of it is acceptable.
	t.sndMax = t.sndMax.Max(t.sndNxt.Add(1))
	t.emitSeg(emit, t.sndNxt, packet.ACK, payload)
}

// restartAfterIdle lets the controller shrink cwnd when nothing was sent
// for longer than the RTO (RFC 5681 §4.1).
func (t *TCB) restartAfterIdle() {
	if t.sndUna == t.sndMax && t.lastSendAt != 0 {
		t.cc.onSendAfterIdle(t.now, t.now.Sub(t.lastSendAt), t.currentRTO())
	}
	t.lastSendAt = t.now
}
