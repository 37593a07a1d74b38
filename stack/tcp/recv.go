package tcp

import (
	"sync/atomic"

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
	if seq == t.rcvNxt {
		t.deliverInOrder(data)
		return
	}
	t.storeOutOfOrder(seg, seq, data)
}

// deliverInOrder appends data at RCV.NXT, then pulls in whatever
// out-of-order bytes it made contiguous, and schedules the ACK.
func (t *TCB) deliverInOrder(data []byte) {
	hadHoles := t.ooo.n > 0
	t.rcvBuf.write(data)
	t.rcvNxt = t.rcvNxt.Add(uint32(len(data)))
	if hadHoles {
		next := t.ooo.advance(t.rcvNxt)
		t.rcvBuf.extend(int(next - t.rcvNxt))
		t.rcvNxt = next
		// RFC 5681 §4.2: a segment that fills a hole is acknowledged at
		// once.
		t.ackNow = true
	}
	if t.readClosed {
		t.discardedUnread = true
		t.rcvBuf.discard(t.rcvBuf.len())
	} else {
		t.events |= EventReadable
	}
	t.ackPending += uint32(len(data))
	t.scheduleAck()
}

// scheduleAck is the delayed-ACK policy: RFC 9293 §3.8.6.3 and RFC 5681
// §4.2 want an ACK for at least every second full-sized segment and
// within 0.5 s; DelayedAck < 0 acknowledges every segment.
func (t *TCB) scheduleAck() {
	if t.cfg.DelayedAck < 0 || t.ackPending >= 2*t.rcvMSS {
		t.ackNow = true
		return
	}
	if t.delackAt.IsZero() {
		t.delackAt = t.now.Add(t.cfg.DelayedAck)
	}
}

// storeOutOfOrder keeps data that starts beyond RCV.NXT (RFC 9293 SHLD-31)
// and acknowledges at once so that the sender sees the hole (RFC 5681
// §4.2) and the SACK blocks (RFC 2018 §4).
func (t *TCB) storeOutOfOrder(seg *Segment, seq Seq, data []byte) {
	t.ackNow = true
	end := seq.Add(uint32(len(data)))
	if !t.ooo.add(seq, end) {
		t.drop(seg, dropOOOFull)
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.OutOfOrder })
	t.rcvBuf.writeAt(t.rcvBuf.len()+int(seq-t.rcvNxt), data)
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
	if t.oooFin && t.rcvNxt == t.oooFinAt && t.ooo.n == 0 {
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
	t.ackNow = true
	t.events |= EventPeerFIN | EventReadable
	switch t.state {
	case Established:
		t.setState(CloseWait, "FIN received")
	case FinWait1:
		if t.finAcked() {
			t.setState(TimeWait, "FIN received, our FIN acknowledged")
		} else {
			t.setState(Closing, "FIN received before our FIN was acknowledged")
		}
	case FinWait2:
		t.setState(TimeWait, "FIN received in FIN-WAIT-2")
	}
}

// queueRST schedules a reset for the next Output. With ack, it carries
// ACK=ack (a reset of a connection); without, it answers a segment whose
// ACK we use as the sequence number.
func (t *TCB) queueRST(seq, ack Seq, withAck bool) {
	t.rstDue = true
	t.rst = Segment{Seq: seq, Flags: packet.RST}
	if withAck {
		t.rst.Flags |= packet.ACK
		t.rst.Ack = ack
	}
}
