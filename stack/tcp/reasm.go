package tcp

import (
	"math/bits"

	"github.com/tungate/tungate/internal/packet"
)

// reasmMaxIntervals bounds the number of disjoint out-of-order ranges a
// reassembly queue holds. Each gap the sender leaves costs one; 32 is far
// more than a sane path produces within one window, and the bound keeps
// every operation a short scan of a fixed array.
const reasmMaxIntervals = 32

// reasmMaxCapacity bounds the byte ring so that every stored range lies
// within 2^30 of every other and Seq comparisons among them are exact.
const reasmMaxCapacity = 1 << 30

// reasmInterval is a stored range [start, end) of sequence space. stamp is
// the arrival counter of the latest segment that touched it, which orders
// SACK blocks (RFC 2018 §4).
type reasmInterval struct {
	start, end Seq
	stamp      uint64
}

// reassembly is the receiver's out-of-order queue (RFC 9293 §3.10.7.4,
// "seventh, process the segment text"): segments that arrive beyond
// RCV.NXT are kept here until the gap before them fills.
//
// Design: a byte ring indexed directly by sequence number modulo its
// power-of-two size (2^k divides 2^32, so the mapping is stable across the
// sequence wrap), plus a sorted fixed array of the ranges present. Neither
// insert nor deliver allocates once the ring exists; the ring is allocated
// on the first out-of-order segment, so connections that never see
// reordering or loss pay nothing. Storage is refused (insert returns false,
// the caller drops the segment and the sender retransmits it) when the
// ranges would exceed reasmMaxIntervals or span more than the ring. The
// ring must therefore be at least as large as the largest receive window
// the TCB advertises.
//
// The zero value has no capacity and refuses everything; use
// newReassembly. Not safe for concurrent use.
type reassembly struct {
	ring []byte // len is a power of two; nil until first needed
	size int    // ring size to allocate
	iv   [reasmMaxIntervals]reasmInterval
	n    int // intervals in use, sorted by start, disjoint, non-adjacent
	// clock numbers arrivals for SACK block ordering.
	clock uint64
	bytes int // total bytes stored
}

// newReassembly returns a queue able to hold out-of-order data spanning
// capacity bytes (rounded up to a power of two, at most 2^30).
func newReassembly(capacity int) *reassembly {
	r := &reassembly{}
	r.setCapacity(capacity)
	return r
}

// setCapacity changes the span the queue can hold, for a receive buffer
// that auto-tunes. Shrinking below the data held is refused (returns
// false); growing copies the stored bytes.
func (r *reassembly) setCapacity(capacity int) bool {
	size := 0
	if capacity > 0 {
		size = 1 << bits.Len(uint(min(capacity, reasmMaxCapacity)-1))
	}
	if size == r.size {
		return true
	}
	if r.n > 0 && uint32(r.iv[r.n-1].end-r.iv[0].start) > uint32(size) {
		return false
	}
	old := r.ring
	r.size = size
	r.ring = nil
	if r.n > 0 {
		r.ring = make([]byte, size)
		for _, iv := range r.iv[:r.n] {
			for s := iv.start; s != iv.end; {
				v := ringView(old, s, iv.end)
				r.copyIn(s, v)
				s = s.Add(uint32(len(v)))
			}
		}
	}
	return true
}

// len is the number of bytes stored.
func (r *reassembly) len() int { return r.bytes }

// empty reports whether nothing is stored.
func (r *reassembly) empty() bool { return r.n == 0 }

// reset forgets everything stored but keeps the ring for reuse.
func (r *reassembly) reset() {
	r.n = 0
	r.bytes = 0
}

// release drops the ring's memory if nothing is stored, for a connection
// that goes idle; the next out-of-order segment allocates it again.
func (r *reassembly) release() {
	if r.n == 0 {
		r.ring = nil
	}
}

// insert copies data, which starts at seq, into the queue. Data
// overlapping what is stored (duplicates, retransmissions with different
// segmentation) is merged; the newer copy of overlapping bytes wins, which
// for a conforming sender is the same bytes. It returns false and stores
// nothing when the data would not fit (see the type's comment). The caller
// must have trimmed data to the receive window and must not pass data at
// or below RCV.NXT that it can deliver directly.
func (r *reassembly) insert(seq Seq, data []byte) bool {
	if len(data) == 0 {
		return true
	}
	if len(data) > r.size {
		return false
	}
	start, end := seq, seq.Add(uint32(len(data)))
	lo, hi := r.overlapping(start, end)
	if lo == hi && r.n == reasmMaxIntervals {
		return false // would need one more interval
	}
	if r.n > 0 {
		first, last := r.iv[0].start.Min(start), r.iv[r.n-1].end.Max(end)
		if uint32(last-first) > uint32(r.size) {
			return false
		}
	}
	if r.ring == nil {
		r.ring = make([]byte, r.size)
	}
	r.copyIn(seq, data)
	r.clock++
	r.merge(lo, hi, start, end)
	return true
}

// overlapping returns the index range [lo, hi) of intervals that overlap
// or touch [start, end); lo == hi means none, and lo is where a new
// interval belongs.
func (r *reassembly) overlapping(start, end Seq) (lo, hi int) {
	lo = 0
	for lo < r.n && r.iv[lo].end.LessThan(start) {
		lo++
	}
	hi = lo
	for hi < r.n && r.iv[hi].start.LessEq(end) {
		hi++
	}
	return lo, hi
}

// merge replaces intervals [lo, hi) with one covering them and
// [start, end), stamped with the current arrival.
func (r *reassembly) merge(lo, hi int, start, end Seq) {
	removed := 0
	if lo < hi {
		start = start.Min(r.iv[lo].start)
		end = end.Max(r.iv[hi-1].end)
		for _, iv := range r.iv[lo:hi] {
			removed += int(iv.end - iv.start)
		}
	}
	nv := reasmInterval{start: start, end: end, stamp: r.clock}
	switch {
	case lo == hi: // insert a new interval at lo
		copy(r.iv[lo+1:r.n+1], r.iv[lo:r.n])
		r.n++
	case hi-lo > 1: // close the gap left by the absorbed intervals
		copy(r.iv[lo+1:], r.iv[hi:r.n])
		r.n -= hi - lo - 1
	}
	r.iv[lo] = nv
	r.bytes += int(end-start) - removed
}

// copyIn writes data at seq's position in the ring.
func (r *reassembly) copyIn(seq Seq, data []byte) {
	mask := uint32(len(r.ring) - 1)
	off := int(uint32(seq) & mask)
	n := copy(r.ring[off:], data)
	copy(r.ring, data[n:])
}

// ringView returns the first contiguous piece of [start, end) in ring: the
// whole range, or its part up to the ring's end.
func ringView(ring []byte, start, end Seq) []byte {
	mask := uint32(len(ring) - 1)
	off := int(uint32(start) & mask)
	n := min(int(end-start), len(ring)-off)
	return ring[off : off+n]
}

// prune drops everything below rcvNxt: bytes the TCB received in order
// directly and no longer needs from here.
func (r *reassembly) prune(rcvNxt Seq) {
	k := 0
	for k < r.n && r.iv[k].end.LessEq(rcvNxt) {
		r.bytes -= int(r.iv[k].end - r.iv[k].start)
		k++
	}
	if k > 0 {
		copy(r.iv[:], r.iv[k:r.n])
		r.n -= k
	}
	if r.n > 0 && r.iv[0].start.LessThan(rcvNxt) {
		r.bytes -= int(rcvNxt - r.iv[0].start)
		r.iv[0].start = rcvNxt
	}
}

// contiguous returns how many bytes starting at rcvNxt deliver would hand
// out, after discarding what lies below rcvNxt.
func (r *reassembly) contiguous(rcvNxt Seq) int {
	r.prune(rcvNxt)
	if r.n == 0 || r.iv[0].start != rcvNxt {
		return 0
	}
	return int(r.iv[0].end - r.iv[0].start)
}

// deliver copies the bytes that are now contiguous from rcvNxt into dst,
// at most len(dst), removes them from the queue and returns how many it
// copied. The caller advances RCV.NXT by n. Anything stored below rcvNxt
// is discarded first.
func (r *reassembly) deliver(rcvNxt Seq, dst []byte) (n int) {
	avail := r.contiguous(rcvNxt)
	if avail == 0 {
		return 0
	}
	want := min(avail, len(dst))
	for n < want {
		v := ringView(r.ring, rcvNxt.Add(uint32(n)), rcvNxt.Add(uint32(want)))
		n += copy(dst[n:], v)
	}
	r.prune(rcvNxt.Add(uint32(n)))
	return n
}

// sackBlocks fills dst with SACK blocks for the stored ranges above rcvNxt
// and returns how many. RFC 2018 §4: the first block is the range holding
// the most recently received segment, the rest follow by how recently a
// segment arrived in them, which repeats the most recently reported blocks
// first; ranges at or below rcvNxt are never reported.
func (r *reassembly) sackBlocks(rcvNxt Seq, dst []packet.SACKBlock) int {
	k := 0
	prev := ^uint64(0) // stamps are unique, so "below prev" walks them in order
	for k < len(dst) {
		best := -1
		for i := range r.iv[:r.n] {
			iv := &r.iv[i]
			if iv.stamp >= prev || iv.start.LessEq(rcvNxt) {
				continue
			}
			if best < 0 || iv.stamp > r.iv[best].stamp {
				best = i
			}
		}
		if best < 0 {
			break
		}
		prev = r.iv[best].stamp
		dst[k] = packet.SACKBlock{Start: uint32(r.iv[best].start), End: uint32(r.iv[best].end)}
		k++
	}
	return k
}
