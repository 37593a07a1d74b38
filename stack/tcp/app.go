package tcp

import (
	"io"
	"sync/atomic"

	"github.com/tungate/tungate/internal/packet"
)

// Read moves received in-order data into p. It returns 0, nil when nothing
// is there yet (the caller waits for EventReadable); io.EOF once the peer's
// FIN was received and every byte before it read, or after CloseRead; an
// error wrapping syscall.ECONNRESET after a reset (buffered data is
// flushed, RFC 9293 §3.10.7.4), and the connection's error (ErrTimeout,
// ErrAborted) after other failures.
func (t *TCB) Read(p []byte) (int, error) {
	if t.rcvBuf.len() > 0 && !t.readClosed {
		n := t.rcvBuf.read(p)
		t.readTotal += uint64(n)
		t.afterRead()
		if t.rcvBuf.len() == 0 && t.ooo.count() == 0 {
			t.rcvEmptied()
		}
		return n, nil
	}
	switch {
	case t.readClosed || (t.finRcvd && t.err == nil):
		return 0, io.EOF
	case t.err == errNormalClose:
		if t.finRcvd {
			return 0, io.EOF
		}
		return 0, ErrClosed
	case t.err != nil:
		return 0, t.err
	}
	return 0, nil
}

// ReadTo is Read with the data handed to write straight from the receive
// buffer: write gets one contiguous run at a time, with last set when the
// run is the rest of the data before the peer's FIN, and returns how much
// it took; a short count or an error (returned as werr) stops. err is what
// Read would return when there is nothing to hand over (io.EOF, the
// connection's error); n, werr and err are all zero when there is nothing
// yet, and then write is not called.
func (t *TCB) ReadTo(write func(p []byte, last bool) (int, error)) (n int, werr, err error) {
	if t.rcvBuf.len() == 0 || t.readClosed {
		_, err = t.Read(nil)
		return 0, nil, err
	}
	for t.rcvBuf.len() > 0 && werr == nil {
		p := t.rcvBuf.headRun()
		last := t.finRcvd && t.err == nil && len(p) == t.rcvBuf.len()
		var k int
		k, werr = write(p, last)
		k = max(0, min(k, len(p)))
		t.rcvBuf.discard(k)
		n += k
		if k < len(p) {
			break
		}
	}
	if n > 0 {
		t.readTotal += uint64(n)
		t.afterRead()
		if t.rcvBuf.len() == 0 && t.ooo.count() == 0 {
			t.rcvEmptied()
		}
	}
	return n, werr, nil
}

// atEOF reports whether the next Read returns io.EOF: the peer's FIN has
// arrived and all data before it has been read.
func (t *TCB) atEOF() bool {
	return t.finRcvd && t.err == nil && !t.readClosed && t.rcvBuf.len() == 0
}

// Peek copies buffered in-order data into p without consuming it.
func (t *TCB) Peek(p []byte) int {
	if t.readClosed {
		return 0
	}
	return t.rcvBuf.peekAt(0, p)
}

// afterRead sends a window update at once when reading opened the window
// a lot: the new window is at least twice the one announced and passes
// receiver SWS avoidance (RFC 9293 §3.8.6.2.2; Linux's rule too) — and
// the peer may be waiting for it: it has used more than half of the
// window last offered, or what is left is less than the two full-sized
// segments that would make us acknowledge (scaled, a window of a few
// bytes reads as 0 to the peer). A peer with most of its window left is
// not held up, and the next ACK, with data or by the delayed-ACK rule,
// carries the larger window: without this, the first read after a
// handshake (a SYN-ACK offers at most 64 KiB, unscaled, RFC 7323 §2.2)
// would cost a pure ACK in front of every response.
func (t *TCB) afterRead() {
	if !t.state.synchronized() || t.finRcvd {
		return
	}
	cur := t.rcvWnd()
	if offered := uint32(t.rcvAdv - t.lastAckSent); cur > offered/2 && cur >= 2*t.rcvMSS {
		return
	}
	space := t.rcvSpace()
	if space <= cur || space < 2*cur {
		return
	}
	if space-cur >= min(uint32(t.rcvBuf.cap()/2), t.sndMSS) {
		t.ackNow = true
	}
}

// Write copies as much of p as the send buffer takes and returns the
// count; 0, nil means the buffer is full (wait for EventWritable). After
// CloseWrite or Close it returns an error matching net.ErrClosed; after a
// reset or timeout the connection's error. Data written before the
// handshake completes is sent once it does.
func (t *TCB) Write(p []byte) (int, error) {
	switch {
	case t.err != nil && t.err != errNormalClose:
		return 0, t.err
	case t.finQueued:
		return 0, ErrWriteClosed
	case t.state == Closed:
		return 0, ErrClosed
	}
	n := t.sndBuf.write(p)
	if n > 0 {
		t.bufBusy = true
	}
	return n, nil
}

// WriteFrom is Write with the data read straight into the send buffer:
// read gets free buffer space and returns how much it filled (see
// ring.writeFrom), and its error comes back as rerr. err is Write's error
// for a connection that takes no data, and then read is not called; it is
// not called either when the buffer is full (n, rerr and err all zero).
func (t *TCB) WriteFrom(read func(p []byte) (int, error)) (n int, rerr, err error) {
	switch {
	case t.err != nil && t.err != errNormalClose:
		return 0, nil, t.err
	case t.finQueued:
		return 0, nil, ErrWriteClosed
	case t.state == Closed:
		return 0, nil, ErrClosed
	}
	n, rerr = t.sndBuf.writeFrom(read)
	if n > 0 {
		t.bufBusy = true
	}
	return n, rerr, nil
}

// Readable reports whether Read would return data or an error now.
func (t *TCB) Readable() bool {
	return (t.rcvBuf.len() > 0 && !t.readClosed) || t.finRcvd || t.readClosed || t.err != nil
}

// Writable reports whether Write would accept data or fail now.
func (t *TCB) Writable() bool {
	return t.sndBuf.free() > 0 || t.finQueued || t.err != nil || t.state == Closed
}

// CloseWrite queues our FIN after the pending data (half-close, RFC 9293
// §3.10.4): ESTABLISHED goes to FIN-WAIT-1, CLOSE-WAIT to LAST-ACK. During
// the handshake the close waits for ESTABLISHED. It is idempotent.
func (t *TCB) CloseWrite() {
	if t.finQueued || t.state == Closed {
		return
	}
	t.finQueued = true
	t.releaseUnneeded()
	switch t.state {
	case Established:
		t.setState(FinWait1, "application closed its direction")
	case CloseWait:
		t.setState(LastAck, "application closed after the peer's FIN")
	case SynSent:
		// §3.10.4 SYN-SENT: "delete the TCB".
		t.close(errNormalClose, "closed in SYN-SENT")
	}
}

// CloseRead stops delivery: buffered data is dropped, later data is
// acknowledged and dropped, and Read returns io.EOF. The receive buffer's
// memory is released; out-of-order ranges are still tracked, without
// their bytes, so that acknowledgments stay right.
func (t *TCB) CloseRead() {
	if t.readClosed {
		return
	}
	t.readClosed = true
	if t.rcvBuf.len() > 0 {
		t.discardedUnread = true
	}
	t.releaseUnneeded()
	t.events |= EventReadable
}

// Close closes both directions. If received data was never read, the
// connection is reset instead (RFC 1122 §4.2.2.13, RFC 2525 §2.17: a RST
// tells the peer its data was lost), as Linux does. Otherwise the FIN is
// queued after pending data, and data that still arrives afterwards
// resets the connection; FIN-WAIT-2 is then bounded by FinWait2Timeout.
func (t *TCB) Close() {
	switch t.state {
	case Closed:
		return
	case TimeWait:
		t.orphaned = true
		return
	}
	if (t.rcvBuf.len() > 0 && !t.readClosed) || t.discardedUnread {
		t.abort("closed with unread data")
		return
	}
	t.orphaned = true
	t.CloseRead()
	t.CloseWrite()
	// Armed by the next Output, which has the caller's time: the TCB's
	// own idea of now is that of the last segment or timer.
	t.finWait2Arm = true
}

// Abort resets the connection now (RFC 9293 §3.10.5 ABORT): a RST is
// queued when the state calls for one, and the TCB enters CLOSED.
// Read and Write then fail with ErrAborted.
func (t *TCB) Abort() { t.abort("aborted by application") }

func (t *TCB) abort(reason string) {
	switch t.state {
	case Closed:
		return
	case SynReceived, Established, FinWait1, FinWait2, CloseWait:
		// "<SEQ=SND.NXT><CTL=RST>"; the ACK makes it acceptable to peers
		// that check it, as Linux sends it.
		t.queueRST(t.sndMax, t.rcvNxt, true)
	}
	t.flushQueues()
	t.close(ErrAborted, reason)
}

// EndTimeWait closes a connection in TIME-WAIT before 2·MSL has passed,
// for an engine whose TIME-WAIT table is full. It reports whether the
// connection was in TIME-WAIT.
func (t *TCB) EndTimeWait(reason string) bool {
	if t.state != TimeWait {
		return false
	}
	t.close(errNormalClose, reason)
	return true
}

// AcceptsNewSyn reports whether syn, arriving for this connection in
// TIME-WAIT, may start a new incarnation (RFC 6191 §2): with timestamps
// on both, when its TSval is newer than the last one seen (or equal with a
// higher sequence number); otherwise when its sequence number is beyond
// RCV.NXT (RFC 9293 §3.6.1, RFC 1122 §4.2.2.13). On true the TCB closes
// (reason "TIME-WAIT reused by new SYN") and the engine creates a new
// one from syn; on false the engine passes syn to Input, which answers
// it as RFC 5961 §4 says.
func (t *TCB) AcceptsNewSyn(syn *Segment) bool {
	if t.state != TimeWait || syn.Flags&(packet.SYN|packet.ACK|packet.RST) != packet.SYN {
		return false
	}
	var ok bool
	if t.tsOK && syn.Opts.HasTS && t.cfg.Timestamps {
		d := int32(syn.Opts.TSVal - t.tsRecent)
		ok = d > 0 || (d == 0 && syn.Seq.GreaterThan(t.rcvNxt))
	} else {
		ok = syn.Seq.GreaterThan(t.rcvNxt)
	}
	if ok {
		t.count(func(c *Counters) *atomic.Uint64 { return &c.TimeWaitReuses })
		t.close(errNormalClose, "TIME-WAIT reused by new SYN")
	}
	return ok
}
