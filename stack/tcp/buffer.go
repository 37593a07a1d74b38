package tcp

import "github.com/tungate/tungate/internal/packet"

// ring is a fixed-capacity byte ring. Bytes [0, n) from head are the
// contents; the rest is free space. It never allocates after creation
// except in grow.
type ring struct {
	buf  []byte
	head int // index of the first byte
	n    int // bytes held
}

func newRing(size int) ring { return ring{buf: make([]byte, size)} }

func (r *ring) len() int  { return r.n }
func (r *ring) cap() int  { return len(r.buf) }
func (r *ring) free() int { return len(r.buf) - r.n }

// write appends as much of p as fits and returns how much that was.
func (r *ring) write(p []byte) int {
	n := r.writeAt(r.n, p)
	r.n += n
	return n
}

// writeAt copies p to offset off from head without changing the length,
// clipped to the capacity. It is how out-of-order data is placed beyond
// the contiguous bytes of the receive buffer.
func (r *ring) writeAt(off int, p []byte) int {
	if off >= len(r.buf) {
		return 0
	}
	p = p[:min(len(p), len(r.buf)-off)]
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

// copyOut copies len(p) bytes at offset off regardless of the held length
// (the receive path reads out-of-order bytes this way).
func (r *ring) copyOut(off int, p []byte) int {
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
	r.head = (r.head + n) % len(r.buf)
}

// extend counts n more bytes, already placed with writeAt, as contents.
func (r *ring) extend(n int) { r.n = min(r.n+n, len(r.buf)) }

// grow raises the capacity to size, keeping the first keep bytes (which
// may exceed n: out-of-order bytes beyond the contents).
func (r *ring) grow(size, keep int) {
	if size <= len(r.buf) {
		return
	}
	nb := make([]byte, size)
	r.copyOut(0, nb[:min(keep, len(r.buf))])
	r.buf, r.head = nb, 0
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
// out-of-order data costs no extra memory and the advertised window bounds
// it. Ranges are sorted by start and never touch or overlap.
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

// extent is how far beyond rcvNxt the stored ranges reach; 0 if none.
func (o *oooRanges) extent(rcvNxt Seq) int {
	if o.n == 0 {
		return 0
	}
	return int(uint32(o.r[o.n-1].end - rcvNxt))
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

func (o *oooRanges) reset() { o.n = 0 }
