package tcp

import (
	"bytes"
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

func TestRing_AllocatesNothingUntilWritten(t *testing.T) {
	r := newRing(1 << 20)
	if r.allocated() != 0 || r.free() != 1<<20 || r.cap() != 1<<20 {
		t.Fatalf("new ring: allocated %d free %d cap %d", r.allocated(), r.free(), r.cap())
	}
	if n := r.read(make([]byte, 10)); n != 0 {
		t.Fatalf("read %d from an empty ring", n)
	}
	r.discard(5)
	r.write([]byte("x"))
	if r.allocated() != minRingAlloc {
		t.Fatalf("one byte allocated %d, want %d", r.allocated(), minRingAlloc)
	}
}

func TestRing_StorageDoublesAndStopsAtCapacity(t *testing.T) {
	r := newRing(20000)
	var sizes []int
	for r.free() > 0 {
		r.write(make([]byte, 1000))
		if a := r.allocated(); len(sizes) == 0 || sizes[len(sizes)-1] != a {
			sizes = append(sizes, a)
		}
	}
	if want := []int{1024, 2048, 4096, 8192, 16384, 20000}; !slices.Equal(sizes, want) {
		t.Fatalf("storage sizes %v, want %v", sizes, want)
	}
}

func TestRing_GrowthKeepsWrappedContentsAndBytesBeyondThem(t *testing.T) {
	r := newRing(64 << 10)
	stream := pattern(0, 3000)
	r.write(stream[:1500])     // 2 KiB of storage
	r.read(make([]byte, 1000)) // head 1000, contents [1000, 1500)
	r.write(stream[1500:2500]) // wraps around the end of the storage
	r.writeAt(1600, []byte("beyond"))
	r.writeAt(5000, []byte("far")) // needs 8 KiB: the storage moves
	if r.allocated() != 8<<10 {
		t.Fatalf("allocated %d, want 8 KiB", r.allocated())
	}
	got := make([]byte, 1500)
	if n := r.peekAt(0, got); n != 1500 || !bytes.Equal(got, stream[1000:2500]) {
		t.Fatalf("contents after growth differ (%d bytes)", n)
	}
	far := make([]byte, 3)
	r.copyOut(5000, far)
	beyond := make([]byte, 6)
	r.copyOut(1600, beyond)
	if string(far) != "far" || string(beyond) != "beyond" {
		t.Fatalf("bytes beyond the contents: %q %q", beyond, far)
	}
}

func TestRing_ViewIsContiguousOrRefused(t *testing.T) {
	r := newRing(minRingAlloc)
	r.write(pattern(0, minRingAlloc))
	r.discard(minRingAlloc - 10)
	r.write(pattern(minRingAlloc, 20)) // contents wrap after 10 bytes
	if p, ok := r.view(0, 10); !ok || !bytes.Equal(p, pattern(minRingAlloc-10, 10)) {
		t.Fatalf("view before the wrap: %v %v", ok, p)
	}
	if _, ok := r.view(5, 10); ok {
		t.Fatal("view across the wrap accepted")
	}
	if p, ok := r.view(10, 20); !ok || !bytes.Equal(p, pattern(minRingAlloc, 20)) {
		t.Fatalf("view after the wrap: %v %v", ok, p)
	}
}

func TestRing_GrowRaisesCapacityOnly(t *testing.T) {
	r := newRing(4)
	r.write([]byte("abcdef"))
	r.grow(16)
	if r.cap() != 16 || r.free() != 12 || r.allocated() != 4 {
		t.Fatalf("cap %d free %d allocated %d", r.cap(), r.free(), r.allocated())
	}
	r.write([]byte("efgh"))
	got := make([]byte, 16)
	if n := r.read(got); string(got[:n]) != "abcdefgh" {
		t.Fatalf("got %q", got[:n])
	}
}

func TestRing_ReleaseKeepsCapacity(t *testing.T) {
	r := newRing(1 << 16)
	r.write([]byte("abc"))
	r.release()
	if r.allocated() != 0 || r.len() != 0 || r.free() != 1<<16 {
		t.Fatalf("after release: allocated %d len %d free %d", r.allocated(), r.len(), r.free())
	}
	r.write([]byte("de"))
	got := make([]byte, 4)
	if n := r.read(got); string(got[:n]) != "de" {
		t.Fatalf("got %q", got[:n])
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
