package tcp

import "github.com/tungate/tungate/internal/packet"

// sbMaxBlocks bounds the SACKed ranges a scoreboard remembers. A receiver
// reports at most 4 blocks per ACK (3 with timestamps); 32 disjoint
// ranges mean 32 holes in one window, beyond what recovery handles well
// anyway.
const sbMaxBlocks = 32

// sbRange is a SACKed range [start, end).
type sbRange struct{ start, end Seq }

// scoreboard is the sender's record of SACKed sequence space and the
// RFC 6675 §4 functions on it: Update, IsLost, SetPipe, NextSeg. It stores
// SACKed ranges, not segments (RFC 6675 §3 allows this), in a sorted fixed
// array: no allocation, every operation a scan of at most sbMaxBlocks.
//
// The TCB owns the recovery variables and passes them in: una is SND.UNA
// (HighACK+1 in RFC 6675's inclusive terms), nxt is SND.NXT (HighData+1),
// and highRxt is one past the highest retransmitted byte (HighRxt+1), so
// "S <= HighRxt" reads "S < highRxt" here and highRxt == una means nothing
// has been retransmitted in this recovery. All ranges here are half-open.
//
// SACK information is advisory (RFC 2018 §8): the sender keeps SACKed
// bytes until they are cumulatively acknowledged; this type only advises.
// The zero value is an empty scoreboard. Not safe for concurrent use.
type scoreboard struct {
	r      [sbMaxBlocks]sbRange // sorted by start, disjoint, non-adjacent
	n      int
	sacked uint32 // total bytes in r
}

// reset forgets all SACK information (RFC 6675 §5.1 allows keeping it over
// an RTO; RFC 2018 §8 suggests dropping it, the TCB decides).
func (s *scoreboard) reset() {
	s.n = 0
	s.sacked = 0
}

// sackedBytes is the number of bytes SACKed above SND.UNA as of the last
// update.
func (s *scoreboard) sackedBytes() uint32 { return s.sacked }

// highestSacked returns one past the highest SACKed byte, or the zero Seq
// when nothing is SACKed (check sackedBytes first).
func (s *scoreboard) highestSacked() Seq {
	if s.n == 0 {
		return 0
	}
	return s.r[s.n-1].end
}

// update is RFC 6675 §4 Update(): it forgets SACK state below una (now
// cumulatively acknowledged) and records the blocks of one ACK. Blocks
// that are empty, reversed, reach beyond nxt, or lie entirely at or below
// una are ignored; so is a D-SACK first block (RFC 2883 §4: below the
// cumulative ACK, or inside the second block). A block starting below una
// is clipped to una. It returns the number of bytes newly SACKed, which is
// non-zero exactly when the ACK is a "duplicate acknowledgment" in
// RFC 6675 §2's sense.
func (s *scoreboard) update(una, nxt Seq, blocks []packet.SACKBlock) (newlySacked uint32) {
	s.prune(una)
	for i, b := range blocks {
		start, end := Seq(b.Start), Seq(b.End)
		if i == 0 && sbIsDSACK(b, blocks, una) {
			continue
		}
		if !start.LessThan(end) || end.GreaterThan(nxt) || end.LessEq(una) ||
			uint32(end-start) > uint32(nxt-una) {
			continue
		}
		newlySacked += s.add(start.Max(una), end)
	}
	return newlySacked
}

// sbIsDSACK reports whether first, the first block of an ACK, is a
// duplicate report (RFC 2883 §4).
func sbIsDSACK(first packet.SACKBlock, blocks []packet.SACKBlock, una Seq) bool {
	if Seq(first.End).LessEq(una) {
		return true
	}
	if len(blocks) < 2 {
		return false
	}
	second := blocks[1]
	return Seq(first.Start).GreaterEq(Seq(second.Start)) && Seq(first.End).LessEq(Seq(second.End))
}

// prune drops SACK state below una.
func (s *scoreboard) prune(una Seq) {
	k := 0
	for k < s.n && s.r[k].end.LessEq(una) {
		s.sacked -= uint32(s.r[k].end - s.r[k].start)
		k++
	}
	if k > 0 {
		copy(s.r[:], s.r[k:s.n])
		s.n -= k
	}
	if s.n > 0 && s.r[0].start.LessThan(una) {
		s.sacked -= uint32(una - s.r[0].start)
		s.r[0].start = una
	}
}

// add merges [start, end) into the ranges and returns how many bytes were
// not SACKed before. When the array is full and the block would need a
// new slot, the highest range is forgotten to make room (or the block
// itself, if it is the highest): forgetting SACK state only makes the
// sender more conservative, and low holes matter most to recovery.
func (s *scoreboard) add(start, end Seq) uint32 {
	lo := 0
	for lo < s.n && s.r[lo].end.LessThan(start) {
		lo++
	}
	hi := lo
	for hi < s.n && s.r[hi].start.LessEq(end) {
		hi++
	}
	if lo == hi && s.n == sbMaxBlocks {
		if lo == s.n {
			return 0
		}
		s.n--
		s.sacked -= uint32(s.r[s.n].end - s.r[s.n].start)
	}
	removed := uint32(0)
	if lo < hi {
		for _, r := range s.r[lo:hi] {
			removed += uint32(r.end - r.start)
		}
		start = start.Min(s.r[lo].start)
		end = end.Max(s.r[hi-1].end)
	}
	switch {
	case lo == hi:
		copy(s.r[lo+1:s.n+1], s.r[lo:s.n])
		s.n++
	case hi-lo > 1:
		copy(s.r[lo+1:], s.r[hi:s.n])
		s.n -= hi - lo - 1
	}
	s.r[lo] = sbRange{start, end}
	grown := uint32(end-start) - removed
	s.sacked += grown
	return grown
}

// isSacked reports whether the byte at seq has been SACKed.
func (s *scoreboard) isSacked(seq Seq) bool {
	for _, r := range s.r[:s.n] {
		if seq.LessThan(r.start) {
			return false
		}
		if seq.LessThan(r.end) {
			return true
		}
	}
	return false
}

// sbThreshold is (DupThresh - 1) * SMSS, the SACKed bytes above a byte
// that RFC 6675 §4 IsLost must exceed.
func sbThreshold(mss uint32, dupThresh int) uint64 {
	return uint64(max(dupThresh, 1)-1) * uint64(mss)
}

// isLost is RFC 6675 §4 IsLost(SeqNum): true when at least dupThresh
// discontiguous SACKed ranges lie above seq, or more than
// (dupThresh-1)*mss SACKed bytes do.
func (s *scoreboard) isLost(seq Seq, mss uint32, dupThresh int) bool {
	above := seq.Add(1)
	count, bytes := 0, uint64(0)
	for i := s.n - 1; i >= 0; i-- {
		r := s.r[i]
		if r.end.LessEq(above) {
			break
		}
		if r.start.GreaterThan(seq) {
			count++
		}
		bytes += uint64(r.end - r.start.Max(above))
	}
	return count >= max(dupThresh, 1) || bytes > sbThreshold(mss, dupThresh)
}

// lostEnd returns the boundary of IsLost: for every unSACKed byte s below
// the highest SACKed byte, isLost(s) == s.LessThan(end). IsLost only gets
// truer further down, so one boundary exists; ok is false when no byte is
// lost. It turns SetPipe's and NextSeg's per-byte loops into range sums.
func (s *scoreboard) lostEnd(mss uint32, dupThresh int) (end Seq, ok bool) {
	d := max(dupThresh, 1)
	if s.n >= d {
		// Bytes below the d-th highest range's start have d ranges above.
		end, ok = s.r[s.n-d].start, true
	}
	t := sbThreshold(mss, dupThresh)
	sum := uint64(0)
	for i := s.n - 1; i >= 0; i-- {
		l := uint64(s.r[i].end - s.r[i].start)
		if sum+l > t {
			// Bytes s with end_i - s - 1 + sum > t are lost.
			b := s.r[i].end.Add(-uint32(t-sum) - 1)
			if !ok || b.GreaterThan(end) {
				end, ok = b, true
			}
			break
		}
		sum += l
	}
	return end, ok
}

// sackedIn is the number of SACKed bytes in [a, b).
func (s *scoreboard) sackedIn(a, b Seq) uint32 {
	n := uint32(0)
	for _, r := range s.r[:s.n] {
		lo, hi := r.start.Max(a), r.end.Min(b)
		if lo.LessThan(hi) {
			n += uint32(hi - lo)
		}
	}
	return n
}

// unsackedIn is the number of bytes in [a, b) not SACKed; zero if b <= a.
func (s *scoreboard) unsackedIn(a, b Seq) uint32 {
	if !a.LessThan(b) {
		return 0
	}
	return uint32(b-a) - s.sackedIn(a, b)
}

// pipe is RFC 6675 §4 SetPipe(): over the unSACKed bytes in [una, nxt),
// (a) each byte not deemed lost counts once, and (b) each byte below
// highRxt (retransmitted in this recovery) counts once more.
func (s *scoreboard) pipe(una, nxt, highRxt Seq, mss uint32, dupThresh int) uint32 {
	notLost := una
	if le, ok := s.lostEnd(mss, dupThresh); ok {
		notLost = le.Max(una).Min(nxt)
	}
	rxtEnd := highRxt.Max(una).Min(nxt)
	return s.unsackedIn(notLost, nxt) + s.unsackedIn(una, rxtEnd)
}

// hole returns the first unSACKed range at or after from, ending at the
// next SACKed range or at nxt.
func (s *scoreboard) hole(from, nxt Seq) (start, end Seq) {
	start, end = from, nxt
	for _, r := range s.r[:s.n] {
		if r.end.LessEq(start) {
			continue
		}
		if r.start.LessEq(start) {
			start = r.end // from is SACKed: the hole begins after this range
			continue
		}
		end = r.start
		break
	}
	return start, end.Max(start)
}

// nextSeg is RFC 6675 §4 NextSeg() rules (1) to (3) and (5): what to send
// next during SACK loss recovery. newAvail is how many bytes of
// never-sent data the send buffer and the peer's window allow from nxt
// (rule 2). A returned start at or beyond nxt is new data; anything below
// is a retransmission, after which the TCB sets highRxt to start+length
// (RFC 6675 §5 step C.2). Rule (4), the rescue retransmission, is
// rescueSeg, because its once-per-recovery state is the TCB's.
func (s *scoreboard) nextSeg(una, nxt, highRxt Seq, mss uint32, dupThresh int, newAvail uint32) (start Seq, length uint32, ok bool) {
	var hs, he Seq
	if s.n > 0 {
		hs, he = s.hole(highRxt.Max(una), nxt)
		limit := s.highestSacked()
		// Rule (1): the first unSACKed byte above HighRxt (1.a), below
		// the highest SACKed byte (1.b), that IsLost (1.c).
		if le, lost := s.lostEnd(mss, dupThresh); lost && hs.LessThan(limit.Min(le)) {
			return hs, min(mss, uint32(he-hs)), true
		}
	}
	// Rule (2): new data if there is any and the window allows.
	if newAvail > 0 {
		return nxt, min(mss, newAvail), true
	}
	// Rule (3): as rule (1) without (1.c).
	if s.n > 0 && hs.LessThan(s.highestSacked()) {
		return hs, min(mss, uint32(he-hs)), true
	}
	return 0, 0, false // rule (5)
}

// rescueSeg is RFC 6675 §4 NextSeg() rule (4): up to mss bytes that
// include the highest outstanding unSACKed byte. The TCB calls it only
// when rules (1)-(3) failed and SND.UNA is beyond RescueRxt (or RescueRxt
// is unset); it then sets RescueRxt to the recovery point and leaves
// HighRxt alone.
func (s *scoreboard) rescueSeg(una, nxt Seq, mss uint32) (start Seq, length uint32, ok bool) {
	end := nxt
	floor := una
	for i := s.n - 1; i >= 0; i-- {
		r := s.r[i]
		if r.end.LessThan(end) {
			floor = r.end.Max(una) // the range above the hole's start
			break
		}
		end = r.start // [r.start, end) is SACKed up to the top
	}
	if !floor.LessThan(end) {
		return 0, 0, false
	}
	length = min(mss, uint32(end-floor))
	return end.Add(-length), length, true
}
