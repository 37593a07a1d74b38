package tcp

import (
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// onText is the seventh step of RFC 9293 §3.10.7.4: data is taken into
// the receive buffer, in order or, beyond RCV.NXT, at its offset with the
// range recorded for reassembly and SACK.
func (t *TCB) onText(seg *Segment, seq Seq, data []byte) {
	if len(data) == 0 {
		return
	}
	switch t.state {
	case Established, FinWait1, FinWait2:
	default:
		// CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: "This should not occur
		// since a FIN has been received from the remote side. Ignore the
		// segment text."
		return
	}
	if t.orphaned {
		// RFC 1122 §4.2.2.13: new data after CLOSE SHOULD be answered with
		// a RST to show that it was lost.
		t.queueRST(t.sndMax, t.rcvNxt, true)
		t.drop(seg, dropDataAfterClose)
		t.close(ErrAborted, "data received after Close")
		return
	}
	t.rcvMSS = max(t.rcvMSS, min(uint32(len(data)), uint32(t.cfg.MSS)))
	t.measureRcvRTT(seg, seq.Add(uint32(len(data))))
	if seq == t.rcvNxt {
		t.deliverInOrder(data)
		return
	}
	t.storeOutOfOrder(seg, seq, data)
}

// deliverInOrder appends data at RCV.NXT, then pulls in whatever
// out-of-order bytes it made contiguous, and schedules the ACK. After
// CloseRead the bytes are not stored, only acknowledged.
func (t *TCB) deliverInOrder(data []byte) {
	hadHoles := t.ooo.count() > 0
	if !t.readClosed {
		t.rcvBuf.write(data)
		t.bufBusy = true
	}
	t.rcvNxt = t.rcvNxt.Add(uint32(len(data)))
	t.tuneRcvBuf()
	if hadHoles {
		next := t.ooo.advance(t.rcvNxt)
		if !t.readClosed {
			t.rcvBuf.extend(int(next - t.rcvNxt))
		}
		t.rcvNxt = next
		// RFC 5681 §4.2: a segment that fills a hole is acknowledged at
		// once.
		t.ackNow = true
	}
	if t.readClosed {
		t.discardedUnread = true
	} else {
		t.events |= EventReadable
	}
	t.ackPending += uint32(len(data))
	t.scheduleAck(len(data))
}

// scheduleAck is the delayed-ACK policy: RFC 9293 §3.8.6.3 and RFC 5681
// §4.2 want an ACK for at least every second full-sized segment and
// within 0.5 s; DelayedAck < 0 acknowledges every segment. A segment of n
// bytes, more than one full-sized segment, is at least two the sender sent
// coalesced on their way (GRO), so it is acknowledged at once too, as
// Linux does.
func (t *TCB) scheduleAck(n int) {
	if t.cfg.DelayedAck < 0 || t.ackPending >= 2*t.rcvMSS || uint32(n) > t.rcvMSS {
		t.ackNow = true
		return
	}
	if t.delackAt == 0 {
		t.delackAt = t.now.Add(t.cfg.DelayedAck)
	}
}

// storeOutOfOrder keeps data that starts beyond RCV.NXT (RFC 9293 SHLD-31)
// and acknowledges at once so that the sender sees the hole (RFC 5681
// §4.2) and the SACK blocks (RFC 2018 §4).
func (t *TCB) storeOutOfOrder(seg *Segment, seq Seq, data []byte) {
	t.ackNow = true
	end := seq.Add(uint32(len(data)))
	if t.ooo == nil {
		t.ooo = new(oooRanges)
	}
	if !t.ooo.add(seq, end) {
		t.drop(seg, dropOOOFull)
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.OutOfOrder })
	if !t.readClosed {
		t.rcvBuf.writeAt(t.rcvBuf.len()+int(seq-t.rcvNxt), data)
		t.bufBusy = true
	}
}

// onFINSeen is the eighth step for a FIN at sequence number at (after the
// trimmed text). A FIN beyond a hole waits for the hole to fill.
func (t *TCB) onFINSeen(at Seq) {
	switch t.state {
	case Established, FinWait1, FinWait2:
	default:
		return
	}
	if at != t.rcvNxt {
		t.oooFin, t.oooFinAt = true, at
		t.ackNow = true
		return
	}
	t.onFIN()
}

// deliverOOOFin processes a FIN held behind a hole once RCV.NXT reaches it.
func (t *TCB) deliverOOOFin() {
	if t.oooFin && t.rcvNxt == t.oooFinAt && t.ooo.count() == 0 {
		t.oooFin = false
		t.onFIN()
	}
}

// onFIN: "advance RCV.NXT over the FIN, and send an acknowledgment for the
// FIN", then the per-state transition (RFC 9293 §3.10.7.4 eighth step).
func (t *TCB) onFIN() {
	if t.finRcvd {
		return
	}
	t.finRcvd = true
	t.rcvNxt = t.rcvNxt.Add(1)
	// A FIN right at the window's right edge is accepted (trim): RCV.NXT
	// then passes the advertised edge, which moves with it so that
	// RCV.WND is zero rather than wrapping around.
	t.rcvAdv = t.rcvAdv.Max(t.rcvNxt)
	t.releaseUnneeded() // nothing more arrives: an empty receive buffer goes
	t.ackNow = true
	t.events |= EventPeerFIN | EventReadable
	switch t.state {
	case Established:
		t.setState(CloseWait, "FIN received")
	case FinWait1:
		// RFC 9293 §3.10.7.4, eighth step: TIME-WAIT if our FIN has been
		// acknowledged "(perhaps in this segment)". The ACK step, which
		// runs first, has then already moved us to FIN-WAIT-2 (below);
		// still in FIN-WAIT-1, it was not.
		t.setState(Closing, "FIN received before our FIN was acknowledged")
	case FinWait2:
		t.setState(TimeWait, "FIN received in FIN-WAIT-2")
	}
}

// queueRST schedules a reset for the next Output. With ack, it carries
// ACK=ack (a reset of a connection); without, it answers a segment whose
// ACK we use as the sequence number.
func (t *TCB) queueRST(seq, ack Seq, withAck bool) {
	t.rstDue = true
	t.rstSeq, t.rstAck, t.rstFlags = seq, 0, packet.RST
	if withAck {
		t.rstAck, t.rstFlags = ack, packet.RST|packet.ACK
	}
}

// rcvTune is the state of receive-buffer auto-tuning: dynamic right-sizing
// as Linux does it (tcp_rcv_space_adjust). The buffer starts at
// RecvBufSize and doubles, up to RecvBufMax, whenever the application read
// more than half of it within one round trip: the peer then fills the
// window about every RTT and the application keeps up, so the window is
// what limits the transfer. A slow reader or a slow sender never grows it.
type rcvTune struct {
	// rcvRTT is the receiver's RTT estimate: the smallest sample, each of
	// them at least one round trip; 0 until the first.
	rcvRTT time.Duration
	// A window measurement runs from rcvRTTAt, when the right edge first
	// moved beyond rcvRTTSeq, until data beyond it arrives; zero rcvRTTAt:
	// none runs.
	rcvRTTAt  clock.Time
	rcvRTTSeq Seq
	rcvRTTEcr uint32 // the TSecr of the last timestamp sample
	// readTotal counts bytes the application read; drsMark is its value
	// when the current measuring period began, which ends at drsDue.
	readTotal uint64
	drsMark   uint64
	drsDue    clock.Time
}

// startRcvRTT is called when the advertised right edge is about to move
// beyond its current place; unless a measurement runs, one starts: data
// beyond today's edge can arrive only after the peer got the new window,
// a round trip from now at the earliest.
func (t *TCB) startRcvRTT() {
	if t.rcvRTTAt == 0 {
		t.rcvRTTAt, t.rcvRTTSeq = t.now, t.rcvAdv
	}
}

// measureRcvRTT takes RTT samples from a data segment ending at end. Two
// kinds, each never less than a round trip (up to the 1 ms timestamp
// clock): the echo of our timestamp (Linux's tcp_rcv_rtt_measure_ts), and
// the time from offering a window to the first byte beyond the old one
// (Linux's way without timestamps). A peer that is not sending as fast as
// it may makes them longer, never shorter, so the estimate keeps the
// smallest: the RTT of a peer that is window-limited or sends as soon as
// an ACK arrives. The receiver cannot use its own RFC 6298 samples: a
// connection that only receives never gets any.
func (t *TCB) measureRcvRTT(seg *Segment, end Seq) {
	if t.tsOK && seg.Opts.HasTS && seg.Opts.TSEcr != 0 && seg.Opts.TSEcr != t.rcvRTTEcr {
		// Each echoed value once: later segments echoing it were sent
		// later, so they only give longer samples.
		t.rcvRTTEcr = seg.Opts.TSEcr
		if d := int32(t.tsNow() - seg.Opts.TSEcr); d >= 0 {
			t.rcvRTTSample(max(time.Duration(d), 1) * clockGranularity)
		}
	}
	if t.rcvRTTAt != 0 && end.GreaterThan(t.rcvRTTSeq) {
		t.rcvRTTSample(max(t.now.Sub(t.rcvRTTAt), time.Microsecond))
		t.rcvRTTAt = 0
	}
}

func (t *TCB) rcvRTTSample(d time.Duration) {
	if t.rcvRTT == 0 || d < t.rcvRTT {
		t.rcvRTT = d
	}
}

// tuneRcvBuf runs on in-order data: once per receiver RTT it compares what
// the application read in that time with the buffer and doubles the
// buffer when that was more than half of it. The new space is announced
// with the next ACK; the buffer never shrinks, so the advertised right
// edge never moves left (RFC 9293 §3.8.6 SHLD-14). The window scale was
// fixed on the handshake for RecvBufMax (windowShift), and without
// scaling nothing beyond 64 KiB can be announced, so growth stops there.
func (t *TCB) tuneRcvBuf() {
	if t.rcvRTT == 0 || t.now.Before(t.drsDue) {
		return
	}
	first := t.drsDue == 0
	copied := t.readTotal - t.drsMark
	t.drsDue, t.drsMark = t.now.Add(t.rcvRTT), t.readTotal
	if first {
		return
	}
	size := t.rcvBuf.cap()
	limit := min(t.cfg.RecvBufMax, maxWindowField<<t.rcvShift)
	if copied*2 <= uint64(size) || size >= limit {
		return
	}
	// Only the capacity grows here; storage follows the data.
	t.rcvBuf.grow(min(2*size, limit))
}
