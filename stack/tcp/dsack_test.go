package tcp

import (
	"testing"

	"github.com/tungate/tungate/internal/packet"
)

// sackBlocks returns seg's SACK blocks as [start, end) pairs relative to
// base.
func sackBlocks(seg Segment, base Seq) [][2]uint32 {
	var out [][2]uint32
	for _, b := range seg.Opts.SACKBlocks[:seg.Opts.NumSACK] {
		out = append(out, [2]uint32{uint32(Seq(b.Start) - base), uint32(Seq(b.End) - base)})
	}
	return out
}

// received100 is an ESTABLISHED harness that has received and
// acknowledged the peer's first 100 bytes; base is their first sequence
// number.
func received100(t *testing.T, mod ...func(*Config)) (h *harness, base Seq) {
	t.Helper()
	h = established(t, mod...)
	base = h.peerNxt
	h.in(h.data(pattern(0, 100)))
	h.take()
	return h, base
}

func TestDSACK_DuplicateBelowTheCumulativeACKIsReportedOnce(t *testing.T) {
	h, base := received100(t)
	dup := h.ack()
	dup.Seq, dup.Payload = base, pattern(0, 100) // the same 100 bytes again
	h.in(dup)
	a := h.one() // at once, not delayed
	if got := sackBlocks(a, base); a.Ack != base.Add(100) || len(got) != 1 || got[0] != [2]uint32{0, 100} {
		t.Fatalf("ACK %d with blocks %v, want ACK 100 and the D-SACK [0,100) (RFC 2883 §4)", a.Ack-base, got)
	}
	h.in(h.data(pattern(100, 10)))
	h.advance(h.cfg.DelayedAck)
	if a := h.one(); a.Opts.NumSACK != 0 {
		t.Fatalf("the D-SACK was reported again: %v", sackBlocks(a, base))
	}
}

func TestDSACK_OverlapReportsTheOldPartAndKeepsTheNew(t *testing.T) {
	h, base := received100(t)
	s := h.ack()
	s.Seq, s.Payload = base.Add(60), pattern(60, 80) // [60,140): 40 old, 40 new
	h.peerNxt = base.Add(140)
	h.in(s)
	a := h.one()
	if got := sackBlocks(a, base); a.Ack != base.Add(140) || len(got) != 1 || got[0] != [2]uint32{60, 100} {
		t.Fatalf("ACK %d with blocks %v, want ACK 140 and the D-SACK [60,100)", a.Ack-base, got)
	}
}

func TestDSACK_ComesBeforeTheOutOfOrderBlocks(t *testing.T) {
	h, base := received100(t)
	ooo := h.ack()
	ooo.Seq, ooo.Payload = base.Add(200), pattern(200, 50)
	h.in(ooo)
	h.take()
	dup := h.ack()
	dup.Seq, dup.Payload = base.Add(10), pattern(10, 20)
	h.in(dup)
	got := sackBlocks(h.one(), base)
	if len(got) != 2 || got[0] != [2]uint32{10, 30} || got[1] != [2]uint32{200, 250} {
		t.Fatalf("blocks %v, want the D-SACK [10,30) then [200,250)", got)
	}
}

func TestDSACK_NotWithoutSACK(t *testing.T) {
	h, base := received100(t, func(c *Config) { c.SACK = false })
	dup := h.ack()
	dup.Seq, dup.Payload = base, pattern(0, 100)
	h.in(dup)
	if a := h.one(); a.Opts.NumSACK != 0 || a.Flags != packet.ACK {
		t.Fatalf("sent %v without SACK negotiated", a.String())
	}
}
