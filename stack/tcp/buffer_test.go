package tcp

import (
	"slices"
	"testing"

	"github.com/tungate/tungate/internal/packet"
)

func TestRing_WriteReadWrapsAround(t *testing.T) {
	r := newRing(10)
	if n := r.write([]byte("abcdefgh")); n != 8 {
		t.Fatalf("write %d", n)
	}
	out := make([]byte, 6)
	r.read(out)
	if n := r.write([]byte("ijklmnop")); n != 8 {
		t.Fatalf("write across the end took %d, want 8", n)
	}
	got := make([]byte, 20)
	n := r.read(got)
	if string(got[:n]) != "ghijklmnop" {
		t.Fatalf("read %q", got[:n])
	}
}

func TestRing_WriteStopsWhenFull(t *testing.T) {
	r := newRing(4)
	if n := r.write([]byte("abcdef")); n != 4 || r.free() != 0 {
		t.Fatalf("write %d free %d", n, r.free())
	}
}

func TestRing_PeekAtDoesNotConsume(t *testing.T) {
	r := newRing(8)
	r.write([]byte("hello"))
	p := make([]byte, 3)
	if n := r.peekAt(2, p); n != 3 || string(p) != "llo" || r.len() != 5 {
		t.Fatalf("peekAt %d %q len %d", n, p, r.len())
	}
	if n := r.peekAt(5, p); n != 0 {
		t.Fatalf("peek beyond contents returned %d", n)
	}
}

func TestRing_WriteAtBeyondContentsThenExtend(t *testing.T) {
	r := newRing(8)
	r.write([]byte("ab"))
	r.read(make([]byte, 2)) // head moves to 2, ring empty
	r.writeAt(3, []byte("XYZ"))
	r.write([]byte("abc"))
	r.extend(3)
	got := make([]byte, 8)
	n := r.read(got)
	if string(got[:n]) != "abcXYZ" {
		t.Fatalf("got %q, want abcXYZ", got[:n])
	}
}

func TestRing_GrowKeepsBytesBeyondContents(t *testing.T) {
	r := newRing(4)
	r.write([]byte("abc"))
	r.read(make([]byte, 2))
	r.write([]byte("de"))
	r.writeAt(3, []byte("f"))
	r.grow(16, 4)
	r.extend(1)
	got := make([]byte, 16)
	n := r.read(got)
	if string(got[:n]) != "cdef" {
		t.Fatalf("got %q after grow", got[:n])
	}
}

func TestOOORanges_MergeTouchingAndOverlapping(t *testing.T) {
	var o oooRanges
	base := Seq(0xfffffff0)
	o.add(base.Add(10), base.Add(20))
	o.add(base.Add(30), base.Add(40))
	o.add(base.Add(20), base.Add(30)) // touches both
	if o.n != 1 || o.r[0].start != base.Add(10) || o.r[0].end != base.Add(40) {
		t.Fatalf("ranges %+v", o.r[:o.n])
	}
}

func TestOOORanges_RefusesBeyondCapacity(t *testing.T) {
	var o oooRanges
	for i := range maxRanges {
		if !o.add(Seq(i*100), Seq(i*100+10)) {
			t.Fatalf("range %d refused", i)
		}
	}
	if o.add(Seq(5000), Seq(5010)) {
		t.Fatal("range beyond capacity accepted")
	}
	if !o.add(Seq(105), Seq(150)) {
		t.Fatal("merging range refused when full")
	}
}

func TestOOORanges_AdvanceConsumesFilledHoles(t *testing.T) {
	var o oooRanges
	o.add(10, 20)
	o.add(30, 40)
	if got := o.advance(5); got != 5 || o.n != 2 {
		t.Fatalf("advance(5) = %d, n %d", got, o.n)
	}
	if got := o.advance(10); got != 20 || o.n != 1 {
		t.Fatalf("advance(10) = %d, n %d", got, o.n)
	}
	if got := o.advance(35); got != 40 || o.n != 0 {
		t.Fatalf("advance(35) = %d, n %d", got, o.n)
	}
}

func TestOOORanges_SACKMostRecentFirst(t *testing.T) {
	var o oooRanges
	o.add(100, 110)
	o.add(300, 310)
	o.add(200, 210)
	o.add(105, 120) // touches the oldest: it becomes the most recent
	var b [4]packet.SACKBlock
	n := o.sack(b[:])
	want := []packet.SACKBlock{{Start: 100, End: 120}, {Start: 200, End: 210}, {Start: 300, End: 310}}
	if n != 3 || !slices.Equal(b[:n], want) {
		t.Fatalf("blocks %+v", b[:n])
	}
	if n := o.sack(b[:2]); n != 2 {
		t.Fatalf("limited to %d blocks, want 2", n)
	}
}
