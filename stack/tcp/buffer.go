package tcp

import "github.com/tungate/tungate/internal/packet"

// ring is a byte ring with a fixed capacity (what free and the window
// count with) whose storage is allocated only as the contents need it: a
// connection that moves little data holds little memory. Bytes [0, n) from
// head are the contents; bytes written beyond them with writeAt keep their
// offset from head while the storage grows.
type ring struct {
	buf  []byte // storage; nil until the first write; len(buf) <= size
	head int    // index in buf of the first byte
	n    int    // bytes held
	size int    // capacity
}

// minRingAlloc is the least storage a ring allocates. Small, because it
// is what a connection that exchanges a few small messages holds: larger
// data reserves the power of two that fits it at once (a full-sized
// segment gets 2 KiB), so a small minimum costs bulk transfers nothing.
const minRingAlloc = 512

// newRing returns an empty ring of capacity size; it allocates nothing.
func newRing(size int) ring { return ring{size: size} }

func (r *ring) len() int  { return r.n }
func (r *ring) cap() int  { return r.size }
func (r *ring) free() int { return r.size - r.n }

// allocated is the storage the ring holds, in bytes.
func (r *ring) allocated() int { return len(r.buf) }

// reserve makes the storage cover offsets [0, end) from head, end <=
// size and > len(buf). Storage doubles (from minRingAlloc) so that the copying is
// amortised over the bytes written; every byte of the old storage moves,
// including bytes beyond the contents placed with writeAt.
func (r *ring) reserve(end int) {
	size := max(2*len(r.buf), minRingAlloc)
	for size < end {
		size *= 2
	}
	nb := make([]byte, min(size, r.size))
	r.copyOut(0, nb[:len(r.buf)])
	r.buf, r.head = nb, 0
}

// write appends as much of p as fits and returns how much that was.
func (r *ring) write(p []byte) int {
	n := r.writeAt(r.n, p)
	r.n += n
	return n
}

// writeFrom appends what read puts straight into the storage: read gets
// one contiguous run of free storage after the contents (the allocated
// free space up to the storage's end or to head) and returns how much of
// it it filled. Storage is allocated (minRingAlloc) or doubled only when
// none is free, so a reader that keeps filling its run (bulk data) grows
// the storage as write does, while a small message, and the read that
// finds nothing more after it, leave it at its minimum. Nothing is
// offered when the ring is full.
func (r *ring) writeFrom(read func(p []byte) (int, error)) (int, error) {
	free := r.free()
	if free == 0 {
		return 0, nil
	}
	if len(r.buf) == r.n {
		r.reserve(r.n + min(free, max(minRingAlloc, len(r.buf))))
	}
	i := (r.head + r.n) % len(r.buf)
	end := len(r.buf)
	if i < r.head {
		end = r.head // the contents wrap: free storage runs up to head
	}
	run := r.buf[i:min(end, i+free)]
	n, err := read(run)
	n = max(0, min(n, len(run)))
	r.n += n
	return n, err
}

// writeAt copies p to offset off from head without changing the length,
// clipped to the capacity. It is how out-of-order data is placed beyond
// the contiguous bytes of the receive buffer.
func (r *ring) writeAt(off int, p []byte) int {
	if off >= r.size || len(p) == 0 {
		return 0
	}
	p = p[:min(len(p), r.size-off)]
	if end := off + len(p); end > len(r.buf) {
		r.reserve(end)
	}
	i := (r.head + off) % len(r.buf)
	c := copy(r.buf[i:], p)
	copy(r.buf, p[c:])
	return len(p)
}

// peekAt copies bytes from offset off (relative to head) into p, up to the
// held length, and returns how many it copied.
func (r *ring) peekAt(off int, p []byte) int {
	if off >= r.n {
		return 0
	}
	p = p[:min(len(p), r.n-off)]
	return r.copyOut(off, p)
}

// view returns the n bytes at offset off as a slice of the storage when
// they do not wrap around its end; ok is false when they do. The slice is
// valid until the next write, discard or release.
func (r *ring) view(off, n int) (p []byte, ok bool) {
	if n == 0 {
		return nil, true
	}
	i := (r.head + off) % len(r.buf)
	if i+n > len(r.buf) {
		return nil, false
	}
	return r.buf[i : i+n], true
}

// headRun returns the contents from head up to the storage's end: all of
// them unless they wrap. The slice is valid until the next write,
// discard or release.
func (r *ring) headRun() []byte {
	if r.n == 0 {
		return nil
	}
	return r.buf[r.head:min(r.head+r.n, len(r.buf))]
}

// copyOut copies len(p) bytes at offset off regardless of the held
// length; off+len(p) must lie within the storage.
func (r *ring) copyOut(off int, p []byte) int {
	if len(p) == 0 {
		return 0
	}
	i := (r.head + off) % len(r.buf)
	c := copy(p, r.buf[i:])
	copy(p[c:], r.buf)
	return len(p)
}

// read moves up to len(p) bytes out of the ring.
func (r *ring) read(p []byte) int {
	n := r.peekAt(0, p)
	r.discard(n)
	return n
}

// discard drops the first n bytes.
func (r *ring) discard(n int) {
	n = min(n, r.n)
	r.n -= n
	// head keeps moving even when the ring empties: out-of-order bytes may
	// sit beyond the contents at offsets relative to it.
	if len(r.buf) > 0 {
		r.head = (r.head + n) % len(r.buf)
	}
}

// extend counts n more bytes, already placed with writeAt, as contents.
func (r *ring) extend(n int) { r.n = min(r.n+n, r.size) }

// grow raises the capacity to size; storage follows when data needs it.
func (r *ring) grow(size int) { r.size = max(r.size, size) }

// rewind moves an empty ring's start to the beginning of its storage, so
// that traffic which empties the ring between writes (a reader that keeps
// up, a sender whose data is acknowledged) copies without wrapping. The
// caller knows that no bytes beyond the contents are stored.
func (r *ring) rewind() {
	if r.n == 0 {
		r.head = 0
	}
}

// release frees the storage and empties the ring; the capacity stays. The
// caller knows that neither the contents nor bytes beyond them are needed.
func (r *ring) release() { r.buf, r.head, r.n = nil, 0, 0 }

// Buffer memory. The rings allocate storage as data is buffered; these
// methods give it back. A direction that is finished releases at once;
// a connection that merely goes quiet keeps its storage for BufferIdle,
// so that request/response traffic and transfers whose buffers drain
// between writes do not allocate again for every message.

// sndEmptied runs when everything in the send buffer has been
// acknowledged: the next write starts at the beginning of the storage,
// and the storage goes if nothing more may be written.
func (t *TCB) sndEmptied() {
	t.sndBuf.rewind()
	if t.finQueued || t.state == Closed {
		t.sndBuf.release()
		t.scratch = nil
	}
}

// rcvEmptied runs when the application has read everything in order and
// no out-of-order bytes are stored: the next segment is stored at the
// beginning of the storage, and the storage goes if nothing more can
// arrive.
func (t *TCB) rcvEmptied() {
	t.rcvBuf.rewind()
	if t.finRcvd || t.state == Closed {
		t.rcvBuf.release()
	}
}

// releaseUnneeded frees the storage nothing can use any more: the send
// ring once it is empty and nothing more may be written (our FIN is
// queued, or the connection is CLOSED), the receive ring once it is empty
// and nothing more can arrive for the application (the peer's FIN,
// CloseRead, CLOSED). Out-of-order bytes keep the receive ring until the
// hole before them fills, except after CloseRead, which stores nothing.
func (t *TCB) releaseUnneeded() {
	if t.sndBuf.len() == 0 && (t.finQueued || t.state == Closed) {
		t.sndBuf.release()
		t.scratch = nil
	}
	if t.readClosed || t.rcvBuf.len() == 0 && t.ooo.count() == 0 && (t.finRcvd || t.state == Closed) {
		t.rcvBuf.release()
	}
}

// releaseOnEnd runs on entering TIME-WAIT or CLOSED: both directions are
// finished, so the buffers go (the receive ring once the application has
// read it), and so do the out-of-order ranges and the SACK scoreboard,
// which nothing consults any more: TIME-WAIT takes no data (RFC 9293
// §3.10.7.4 seventh step) and has nothing outstanding.
func (t *TCB) releaseOnEnd() {
	t.releaseUnneeded()
	t.ooo, t.sb = nil, nil
}

// idleStorage reports whether a ring holds storage but no data, which the
// buffer-idle timer may release.
func (t *TCB) idleStorage() bool {
	return t.sndBuf.allocated() > 0 && t.sndBuf.len() == 0 ||
		t.rcvBuf.allocated() > 0 && t.rcvBuf.len() == 0 && t.ooo.count() == 0
}

// armBufferIdle starts the buffer-idle timer when a ring holds storage
// and no data. Output calls it while the timer is not armed, after every
// event that may have emptied a ring.
func (t *TCB) armBufferIdle() {
	if t.cfg.BufferIdle > 0 && t.idleStorage() {
		t.bufIdleAt = t.now.Add(t.cfg.BufferIdle)
		t.bufBusy = false
	}
}

// onBufferIdle releases the storage of empty rings when no data entered
// either ring for a whole BufferIdle period; otherwise it waits another
// period. The out-of-order ranges and the scoreboard go too when empty
// and no recovery needs them.
func (t *TCB) onBufferIdle() {
	if t.bufBusy {
		t.bufBusy = false
		if t.idleStorage() {
			t.bufIdleAt = t.now.Add(t.cfg.BufferIdle)
		}
		return
	}
	if t.sndBuf.len() == 0 {
		t.sndBuf.release()
		t.scratch = nil
	}
	if t.rcvBuf.len() == 0 && t.ooo.count() == 0 {
		t.rcvBuf.release()
		t.ooo = nil
	}
	if t.sb != nil && t.sb.n == 0 && !t.inRecovery {
		t.sb = nil
	}
}

// maxRanges bounds the out-of-order ranges the receiver tracks: each hole
// the sender leaves costs one. 32 matches what the sender's scoreboard
// remembers and is far more than one window of a sane path produces; a
// segment that would need another range is dropped (the sender
// retransmits it) rather than forgetting SACKed data, which would be
// reneging (RFC 2018 §8). Every operation is a scan of this fixed array.
const maxRanges = 32

// seqRange is [start, end) of received out-of-order sequence space. age is
// the arrival number of the latest segment that touched the range; it
// orders SACK blocks (RFC 2018 §4). 64 bits never wrap.
type seqRange struct {
	start, end Seq
	age        uint64
}

// oooRanges tracks which bytes beyond RCV.NXT the receive buffer holds.
// The bytes themselves live in the receive ring at their offset, so
// out-of-order data needs no other memory and the advertised window
// bounds it. Ranges are sorted by start and never touch or overlap.
type oooRanges struct {
	r     [maxRanges]seqRange
	n     int
	clock uint64 // arrival counter for age
}

// add records [start, end) and returns false when it needs a new range
// and none is free.
func (o *oooRanges) add(start, end Seq) bool {
	o.clock++
	i := 0
	for i < o.n && o.r[i].end.LessThan(start) {
		i++
	}
	// ranges i.. may touch or overlap [start,end); merge them all into i.
	j := i
	for j < o.n && o.r[j].start.LessEq(end) {
		start, end = start.Min(o.r[j].start), end.Max(o.r[j].end)
		j++
	}
	if j == i { // no merge: insert a new range at i
		if o.n == maxRanges {
			return false
		}
		copy(o.r[i+1:o.n+1], o.r[i:o.n])
		o.n++
		j = i + 1
	}
	o.r[i] = seqRange{start: start, end: end, age: o.clock}
	copy(o.r[i+1:], o.r[j:o.n])
	o.n -= j - i - 1
	return true
}

// advance removes what lies below rcvNxt and returns the new RCV.NXT if
// the first range starts at or before it (the hole is filled).
func (o *oooRanges) advance(rcvNxt Seq) Seq {
	for o.n > 0 && o.r[0].start.LessEq(rcvNxt) {
		rcvNxt = rcvNxt.Max(o.r[0].end)
		copy(o.r[:], o.r[1:o.n])
		o.n--
	}
	return rcvNxt
}

// sack fills dst with SACK blocks and returns how many it wrote. RFC
// 2018 §4: the first block holds the segment that arrived last, the others
// repeat the most recently reported blocks first. A block is first in the
// ACK its newest segment triggered, so most recent arrival first is that
// order; merged ranges carry the newest age of their parts, and ranges at
// or below RCV.NXT are gone (advance), so none is reported.
func (o *oooRanges) sack(dst []packet.SACKBlock) int {
	prev := ^uint64(0) // ages are unique: "below prev" walks them newest first
	k := 0
	for ; k < len(dst); k++ {
		best := -1
		for i := range o.n {
			if a := o.r[i].age; a < prev && (best < 0 || a > o.r[best].age) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		prev = o.r[best].age
		dst[k] = packet.SACKBlock{Start: uint32(o.r[best].start), End: uint32(o.r[best].end)}
	}
	return k
}

// count is how many ranges are held; a nil oooRanges holds none.
func (o *oooRanges) count() int {
	if o == nil {
		return 0
	}
	return o.n
}
