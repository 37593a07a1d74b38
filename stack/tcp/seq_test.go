package tcp

import "testing"

func TestSeq_ComparisonsAcrossTheWrap(t *testing.T) {
	a, b := Seq(0xfffffff0), Seq(0x10) // b is 32 after a
	if !a.LessThan(b) || !a.LessEq(b) || a.GreaterThan(b) || a.GreaterEq(b) {
		t.Fatal("a < b across the wrap not recognised")
	}
	if !b.GreaterThan(a) || !b.GreaterEq(a) || b.LessThan(a) {
		t.Fatal("b > a across the wrap not recognised")
	}
	if !a.LessEq(a) || !a.GreaterEq(a) || a.LessThan(a) || a.GreaterThan(a) {
		t.Fatal("equality cases wrong")
	}
}

func TestSeq_AddAndSubWrap(t *testing.T) {
	s := Seq(0xffffffff)
	if s.Add(1) != 0 || s.Add(2) != 1 {
		t.Fatal("Add does not wrap")
	}
	if d := Seq(5).Sub(Seq(0xfffffffb)); d != 10 {
		t.Fatalf("Sub = %d, want 10", d)
	}
	if d := Seq(0xfffffffb).Sub(Seq(5)); d != -10 {
		t.Fatalf("Sub = %d, want -10", d)
	}
}

func TestSeq_InWindowEdges(t *testing.T) {
	start := Seq(0xfffffffe)
	for _, tc := range []struct {
		s    Seq
		size uint32
		want bool
	}{
		{start, 4, true},         // left edge
		{start.Add(3), 4, true},  // last octet, across the wrap
		{start.Add(4), 4, false}, // right edge is outside
		{start.Add(^uint32(0)), 4, false},
		{start, 0, false}, // an empty window holds nothing
	} {
		if got := tc.s.InWindow(start, tc.size); got != tc.want {
			t.Errorf("%d.InWindow(%d, %d) = %v", tc.s, start, tc.size, got)
		}
	}
}

func TestSeq_InRangeAndMinMax(t *testing.T) {
	a, b := Seq(0xfffffff0), Seq(0x10)
	if !Seq(0).InRange(a, b) || b.InRange(a, b) || !a.InRange(a, b) {
		t.Fatal("InRange wrong across the wrap")
	}
	if a.Max(b) != b || b.Max(a) != b || a.Min(b) != a || b.Min(a) != a {
		t.Fatal("Min/Max wrong across the wrap")
	}
}
