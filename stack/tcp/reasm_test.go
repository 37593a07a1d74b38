package tcp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tungate/tungate/internal/packet"
)

// reasmBase is where test streams start: 2^32 - 256, so every stream
// longer than 256 bytes wraps.
const reasmBase Seq = 0xffff_ff00

// reasmSeg is one test segment: offsets into the stream.
type reasmSeg struct{ off, end int }

// reasmModel is the reference: per byte, whether it is held and the
// arrival number of the last segment that brought it.
type reasmModel struct {
	held  []bool
	stamp []int
}

func newReasmModel(n int) *reasmModel {
	return &reasmModel{held: make([]bool, n), stamp: make([]int, n)}
}

func (m *reasmModel) insert(s reasmSeg, arrival int) {
	for i := s.off; i < s.end; i++ {
		m.held[i], m.stamp[i] = true, arrival
	}
}

// blocks returns the SACK blocks RFC 2018 §4 asks for above offset nxt:
// maximal held runs, most recent arrival first.
func (m *reasmModel) blocks(nxt, limit int) []packet.SACKBlock {
	type run struct {
		b     packet.SACKBlock
		stamp int
	}
	var runs []run
	for i := nxt + 1; i < len(m.held); i++ {
		if !m.held[i] || m.held[i-1] {
			continue
		}
		j, st := i, 0
		for ; j < len(m.held) && m.held[j]; j++ {
			st = max(st, m.stamp[j])
		}
		runs = append(runs, run{packet.SACKBlock{Start: uint32(reasmBase.Add(uint32(i))), End: uint32(reasmBase.Add(uint32(j)))}, st})
	}
	slices.SortFunc(runs, func(a, b run) int { return b.stamp - a.stamp })
	out := []packet.SACKBlock{}
	for _, r := range runs[:min(len(runs), limit)] {
		out = append(out, r.b)
	}
	return out
}

// reasmReceiver plays the TCB: in-order data is delivered directly,
// out-of-order data goes to the queue, and after each segment the queue
// is drained.
type reasmReceiver struct {
	t      *testing.T
	r      *reassembly
	m      *reasmModel
	stream []byte
	nxt    int // RCV.NXT as a stream offset
	out    []byte
	buf    []byte
	n      int
}

func newReasmReceiver(t *testing.T, stream []byte, capacity int) *reasmReceiver {
	return &reasmReceiver{
		t: t, r: newReassembly(capacity), m: newReasmModel(len(stream)),
		stream: stream, buf: make([]byte, 7), // small: deliver in pieces
	}
}

func (x *reasmReceiver) rcvNxt() Seq { return reasmBase.Add(uint32(x.nxt)) }

func (x *reasmReceiver) segment(s reasmSeg) {
	x.n++
	switch {
	case s.end <= x.nxt: // old duplicate: dropped
	case s.off <= x.nxt: // in order: straight to the application
		x.out = append(x.out, x.stream[x.nxt:s.end]...)
		x.nxt = s.end
	default:
		if !x.r.insert(reasmBase.Add(uint32(s.off)), x.stream[s.off:s.end]) {
			x.t.Fatalf("insert [%d,%d) refused", s.off, s.end)
		}
		x.m.insert(s, x.n)
	}
	for {
		k := x.r.deliver(x.rcvNxt(), x.buf)
		if k == 0 {
			break
		}
		x.out = append(x.out, x.buf[:k]...)
		x.nxt += k
	}
}

func (x *reasmReceiver) check(step string) {
	x.t.Helper()
	if !bytes.Equal(x.out, x.stream[:x.nxt]) {
		x.t.Fatalf("%s: delivered bytes differ from the stream", step)
	}
	for _, size := range []int{4, 3, 1} {
		want := x.m.blocks(x.nxt, size)
		dst := make([]packet.SACKBlock, size)
		got := dst[:x.r.sackBlocks(x.rcvNxt(), dst)]
		if !slices.Equal(got, want) {
			x.t.Fatalf("%s: SACK blocks (max %d) %v, want %v", step, size, got, want)
		}
	}
	held := 0
	for i := x.nxt; i < len(x.m.held); i++ {
		if x.m.held[i] {
			held++
		}
	}
	if x.r.len() != held || x.r.empty() != (held == 0) {
		x.t.Fatalf("%s: len %d empty %v, model holds %d", step, x.r.len(), x.r.empty(), held)
	}
}

func reasmStream(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// permutations calls f with every ordering of 0..n-1.
func permutations(n int, f func([]int)) {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	var rec func(k int)
	rec = func(k int) {
		if k == n {
			f(p)
			return
		}
		for i := k; i < n; i++ {
			p[k], p[i] = p[i], p[k]
			rec(k + 1)
			p[k], p[i] = p[i], p[k]
		}
	}
	rec(0)
}

func TestReassembly_EveryOrderDeliversStreamWithExactSACKBlocks(t *testing.T) {
	layouts := []struct {
		name string
		segs []reasmSeg
	}{
		{"four contiguous", []reasmSeg{{0, 100}, {100, 250}, {250, 300}, {300, 500}}},
		{"five contiguous, tiny ones", []reasmSeg{{0, 1}, {1, 200}, {200, 201}, {201, 400}, {400, 600}}},
		{"five overlapping", []reasmSeg{{0, 120}, {100, 260}, {250, 300}, {280, 420}, {400, 500}}},
		{"five with duplicate and superset", []reasmSeg{{0, 100}, {100, 300}, {150, 200}, {100, 300}, {300, 310}}},
		{"four nested", []reasmSeg{{0, 50}, {50, 400}, {100, 200}, {120, 130}}},
		{"five spanning gaps", []reasmSeg{{0, 60}, {60, 120}, {180, 240}, {100, 200}, {240, 700}}},
	}
	for _, l := range layouts {
		total := 0
		for _, s := range l.segs {
			total = max(total, s.end)
		}
		stream := reasmStream(total)
		orders := 0
		permutations(len(l.segs), func(p []int) {
			orders++
			x := newReasmReceiver(t, stream, 1024)
			for i, k := range p {
				x.segment(l.segs[k])
				x.check(fmt.Sprintf("%s, order %v, step %d", l.name, p, i))
			}
			if x.nxt != total || !x.r.empty() {
				t.Fatalf("%s, order %v: RCV.NXT at %d of %d, queue empty %v", l.name, p, x.nxt, total, x.r.empty())
			}
		})
		if want := map[int]int{4: 24, 5: 120}[len(l.segs)]; orders != want {
			t.Fatalf("%s: %d orders, want %d", l.name, orders, want)
		}
	}
}

func TestReassembly_RandomSegmentsMatchModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	for trial := range 200 {
		total := 300 + rng.IntN(1500)
		stream := reasmStream(total)
		x := newReasmReceiver(t, stream, 4096)
		for step := 0; x.nxt < total; step++ {
			off := x.nxt + rng.IntN(min(400, total-x.nxt))
			if rng.IntN(4) == 0 {
				off = max(0, x.nxt-rng.IntN(50)) // in order or overlapping RCV.NXT
			}
			end := min(total, off+1+rng.IntN(120))
			// Offsets within 400 bytes of RCV.NXT keep the holes well
			// below the interval limit.
			x.segment(reasmSeg{off, end})
			x.check(fmt.Sprintf("trial %d step %d [%d,%d)", trial, step, off, end))
		}
	}
}

func TestReassembly_RefusesBeyondIntervalLimit(t *testing.T) {
	r := newReassembly(1 << 16)
	nxt := reasmBase
	seg := []byte("xy")
	for i := range reasmMaxIntervals {
		if !r.insert(nxt.Add(uint32(10+4*i)), seg) {
			t.Fatalf("interval %d refused", i)
		}
	}
	if r.insert(nxt.Add(10+4*reasmMaxIntervals), seg) {
		t.Error("a range needing interval 33 was stored")
	}
	if !r.insert(nxt.Add(12), seg) { // fills the gap between the first two
		t.Error("a range merging two intervals was refused at the limit")
	}
	if !r.insert(nxt.Add(10+4*reasmMaxIntervals), seg) {
		t.Error("after a merge freed an interval, a new one was refused")
	}
	if !r.insert(nxt.Add(10), seg) { // duplicate
		t.Error("a duplicate was refused at the limit")
	}
}

func TestReassembly_RefusesBeyondCapacity(t *testing.T) {
	r := newReassembly(1000) // rounded up to 1024
	nxt := reasmBase
	if !r.insert(nxt.Add(10), make([]byte, 10)) {
		t.Fatal("first segment refused")
	}
	if r.insert(nxt.Add(1030), make([]byte, 10)) {
		t.Error("data spanning 1030 bytes stored in a 1024-byte queue")
	}
	if !r.insert(nxt.Add(1014), make([]byte, 20)) {
		t.Error("data spanning exactly 1024 bytes refused")
	}
	if r.insert(nxt, make([]byte, 1025)) {
		t.Error("a segment larger than the queue was stored")
	}
	var zero reassembly
	if zero.insert(nxt.Add(1), []byte("x")) {
		t.Error("the zero value stored data")
	}
	if !zero.insert(nxt, nil) {
		t.Error("an empty insert reported refusal")
	}
}

func TestReassembly_DeliverDiscardsWhatRcvNxtPassed(t *testing.T) {
	r := newReassembly(4096)
	stream := reasmStream(300)
	r.insert(reasmBase.Add(100), stream[100:200])
	r.insert(reasmBase.Add(250), stream[250:300])
	// The TCB got [0,150) in order by itself: [100,150) here is stale.
	dst := make([]byte, 500)
	n := r.deliver(reasmBase.Add(150), dst)
	if n != 50 || !bytes.Equal(dst[:n], stream[150:200]) {
		t.Fatalf("delivered %d bytes, want [150,200)", n)
	}
	if r.len() != 50 {
		t.Fatalf("len %d, want 50", r.len())
	}
	var blocks [4]packet.SACKBlock
	k := r.sackBlocks(reasmBase.Add(200), blocks[:])
	if k != 1 || blocks[0] != (packet.SACKBlock{Start: uint32(reasmBase.Add(250)), End: uint32(reasmBase.Add(300))}) {
		t.Fatalf("SACK blocks %v", blocks[:k])
	}
	if r.deliver(reasmBase.Add(200), dst) != 0 {
		t.Fatal("delivered across a hole")
	}
	if r.sackBlocks(reasmBase.Add(300), blocks[:]) != 0 || r.deliver(reasmBase.Add(300), dst) != 0 || !r.empty() {
		t.Fatal("data below RCV.NXT survived")
	}
}

func TestReassembly_GrowKeepsData(t *testing.T) {
	r := newReassembly(256)
	stream := reasmStream(700)
	r.insert(reasmBase.Add(100), stream[100:300]) // wraps the 256-byte ring
	if !r.setCapacity(1024) {
		t.Fatal("grow refused")
	}
	if !r.insert(reasmBase.Add(300), stream[300:700]) {
		t.Fatal("insert after grow refused")
	}
	dst := make([]byte, 700)
	if n := r.deliver(reasmBase.Add(100), dst); n != 600 || !bytes.Equal(dst[:n], stream[100:700]) {
		t.Fatalf("after grow delivered %d bytes, want [100,700) intact", n)
	}
	r.insert(reasmBase.Add(800), make([]byte, 500))
	if r.setCapacity(256) {
		t.Error("shrink below held data accepted")
	}
}

func TestReassembly_ResetAndRelease(t *testing.T) {
	r := newReassembly(1024)
	r.insert(reasmBase.Add(5), []byte("abc"))
	r.reset()
	if !r.empty() || r.len() != 0 {
		t.Fatal("reset left data")
	}
	r.release()
	if r.ring != nil {
		t.Fatal("release kept the ring of an empty queue")
	}
	if !r.insert(reasmBase.Add(5), []byte("abc")) || r.len() != 3 {
		t.Fatal("insert after release failed")
	}
}

func TestReassembly_SteadyStateDoesNotAllocate(t *testing.T) {
	r := newReassembly(1 << 16)
	payload := make([]byte, 1400)
	dst := make([]byte, 1<<16)
	var blocks [4]packet.SACKBlock
	nxt := reasmBase
	round := func() {
		// Segments 2..5 of a window arrive before 1 (lost, then
		// retransmitted): queue, SACK, then fill and drain.
		for i := 4; i >= 1; i-- {
			r.insert(nxt.Add(uint32(i*1400)), payload)
			r.sackBlocks(nxt, blocks[:])
		}
		nxt = nxt.Add(1400) // segment 1 delivered in order by the TCB
		nxt = nxt.Add(uint32(r.deliver(nxt, dst)))
	}
	round() // allocates the ring
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("%v allocations per round", allocs)
	}
	if !r.empty() {
		t.Errorf("queue not drained: %d bytes", r.len())
	}
}

func BenchmarkReassemblyInsertDeliver(b *testing.B) {
	r := newReassembly(1 << 16)
	payload := make([]byte, 1400)
	dst := make([]byte, 1<<16)
	var blocks [4]packet.SACKBlock
	nxt := reasmBase
	b.ReportAllocs()
	for b.Loop() {
		for i := 4; i >= 1; i-- {
			r.insert(nxt.Add(uint32(i*1400)), payload)
			r.sackBlocks(nxt, blocks[:])
		}
		nxt = nxt.Add(1400)
		nxt = nxt.Add(uint32(r.deliver(nxt, dst)))
	}
}
