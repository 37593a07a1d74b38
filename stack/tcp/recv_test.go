package tcp

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// --- Reassembly and SACK blocks against a per-byte reference model. ---

// reasmSeg is one test segment: offsets into the stream.
type reasmSeg struct{ off, end int }

// reasmModel is the reference receiver: per byte, whether it is held and
// the arrival number of the last segment that brought it; nxt is RCV.NXT
// as a stream offset.
type reasmModel struct {
	held  []bool
	stamp []int
	nxt   int
}

func newReasmModel(n int) *reasmModel {
	return &reasmModel{held: make([]bool, n), stamp: make([]int, n)}
}

func (m *reasmModel) insert(s reasmSeg, arrival int) {
	for i := max(s.off, m.nxt); i < s.end; i++ {
		m.held[i], m.stamp[i] = true, arrival
	}
	for m.nxt < len(m.held) && m.held[m.nxt] {
		m.nxt++
	}
}

// blocks returns the SACK blocks RFC 2018 §4 asks for: maximal held runs
// above RCV.NXT, the one with the most recent arrival first.
func (m *reasmModel) blocks(base Seq, limit int) []packet.SACKBlock {
	type run struct {
		b     packet.SACKBlock
		stamp int
	}
	var runs []run
	for i := m.nxt + 1; i < len(m.held); i++ {
		if !m.held[i] || m.held[i-1] {
			continue
		}
		j, st := i, 0
		for ; j < len(m.held) && m.held[j]; j++ {
			st = max(st, m.stamp[j])
		}
		runs = append(runs, run{packet.SACKBlock{Start: uint32(base.Add(uint32(i))), End: uint32(base.Add(uint32(j)))}, st})
	}
	slices.SortFunc(runs, func(a, b run) int { return b.stamp - a.stamp })
	out := []packet.SACKBlock{}
	for _, r := range runs[:min(len(runs), limit)] {
		out = append(out, r.b)
	}
	return out
}

// reasmRun feeds segments of a stream to an ESTABLISHED TCB, reads what it
// delivers and compares everything with the model after each segment.
type reasmRun struct {
	h      *harness
	m      *reasmModel
	stream []byte
	base   Seq // sequence number of stream offset 0
	got    []byte
	buf    []byte
	n      int
	dup    []packet.SACKBlock // the D-SACK block the last segment calls for (RFC 2883), if any
}

// reasmBuffers keeps the many TCBs of these tests small.
func reasmBuffers(c *Config) { c.RecvBufSize, c.RecvBufMax, c.SendBufSize = 8<<10, 8<<10, 1024 }

func newReasmRun(t *testing.T, stream []byte) *reasmRun {
	h := established(t, reasmBuffers)
	h.tcb.SetTrace(nil)
	return &reasmRun{h: h, m: newReasmModel(len(stream)), stream: stream, base: h.peerNxt, buf: make([]byte, 7)}
}

// segment feeds s and reports whether it lands beyond RCV.NXT.
func (x *reasmRun) segment(s reasmSeg) (outOfOrder bool) {
	outOfOrder = s.off > x.m.nxt
	x.dup = nil
	if s.off < x.m.nxt { // the part below RCV.NXT arrived before
		x.dup = []packet.SACKBlock{{Start: uint32(x.base.Add(uint32(s.off))), End: uint32(x.base.Add(uint32(min(s.end, x.m.nxt))))}}
	}
	x.n++
	seg := x.h.ack()
	seg.Seq = x.base.Add(uint32(s.off))
	seg.Payload = x.stream[s.off:s.end]
	x.h.in(seg)
	x.m.insert(s, x.n)
	return outOfOrder
}

func (x *reasmRun) check(step string, storedOOO bool) {
	t := x.h.t
	t.Helper()
	out := x.h.take()
	if (storedOOO || x.dup != nil) && len(out) == 0 {
		t.Fatalf("%s: out-of-order or duplicate segment not acknowledged at once (RFC 5681 §4.2, RFC 2883)", step)
	}
	if len(out) > 0 {
		a := out[len(out)-1]
		want := append(x.dup, x.m.blocks(x.base, maxSACKWithTS-len(x.dup))...)
		got := a.Opts.SACKBlocks[:a.Opts.NumSACK]
		if a.Ack != x.base.Add(uint32(x.m.nxt)) || !slices.Equal(got, want) {
			t.Fatalf("%s: ACK %d SACK %v, want ACK %d SACK %v", step, a.Ack-x.base, got, x.m.nxt, want)
		}
	}
	for _, size := range []int{4, 3, 1} {
		dst := make([]packet.SACKBlock, size)
		var got []packet.SACKBlock
		if x.h.tcb.ooo != nil {
			got = dst[:x.h.tcb.ooo.sack(dst)]
		}
		if want := x.m.blocks(x.base, size); !slices.Equal(got, want) {
			t.Fatalf("%s: SACK blocks (max %d) %v, want %v", step, size, got, want)
		}
	}
	for {
		n, _ := x.h.tcb.Read(x.buf) // small reads: deliver in pieces
		if n == 0 {
			break
		}
		x.got = append(x.got, x.buf[:n]...)
	}
	if !bytes.Equal(x.got, x.stream[:x.m.nxt]) || x.h.tcb.rcvNxt != x.base.Add(uint32(x.m.nxt)) {
		t.Fatalf("%s: read %d bytes, RCV.NXT at %d; want the stream's first %d", step, len(x.got), x.h.tcb.rcvNxt-x.base, x.m.nxt)
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
			x := newReasmRun(t, stream)
			for i, k := range p {
				ooo := x.segment(l.segs[k])
				x.check(fmt.Sprintf("%s, order %v, step %d", l.name, p, i), ooo)
			}
			if x.m.nxt != total || x.h.tcb.ooo.count() != 0 {
				t.Fatalf("%s, order %v: RCV.NXT at %d of %d, %d ranges left", l.name, p, x.m.nxt, total, x.h.tcb.ooo.count())
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
		x := newReasmRun(t, reasmStream(total))
		for step := 0; x.m.nxt < total; step++ {
			off := x.m.nxt + rng.IntN(min(400, total-x.m.nxt))
			if rng.IntN(4) == 0 {
				off = max(0, x.m.nxt-rng.IntN(50)) // in order or overlapping RCV.NXT
			}
			end := min(total, off+1+rng.IntN(120))
			// Offsets within 400 bytes of RCV.NXT keep the holes well
			// below the range limit.
			ooo := x.segment(reasmSeg{off, end})
			x.check(fmt.Sprintf("trial %d step %d [%d,%d)", trial, step, off, end), ooo)
		}
	}
}

func TestReassembly_SegmentNeedingOneRangeTooManyIsDropped(t *testing.T) {
	x := newReasmRun(t, reasmStream(4*maxRanges+20))
	for i := range maxRanges {
		x.check(fmt.Sprintf("range %d", i), x.segment(reasmSeg{10 + 4*i, 12 + 4*i}))
	}
	h := x.h
	dropped := h.stats.DroppedSegments.Load()
	seg := h.ack()
	seg.Seq, seg.Payload = x.base.Add(10+4*maxRanges), x.stream[10+4*maxRanges:12+4*maxRanges]
	h.in(seg)
	if h.stats.DroppedSegments.Load() != dropped+1 {
		t.Fatal("a segment needing one range too many was not dropped")
	}
	if h.tcb.ooo.count() != maxRanges {
		t.Fatalf("%d ranges, want %d", h.tcb.ooo.count(), maxRanges)
	}
	h.take()
	// A segment that merges two ranges needs no new one and is kept.
	x.check("merge at the limit", x.segment(reasmSeg{12, 14}))
	if h.tcb.ooo.count() != maxRanges-1 {
		t.Fatalf("%d ranges after the merge, want %d", h.tcb.ooo.count(), maxRanges-1)
	}
}

func TestReassembly_OutOfOrderPathDoesNotAllocate(t *testing.T) {
	h := established(t)
	h.tcb.SetTrace(nil)
	payload := make([]byte, 1400)
	buf := make([]byte, 8*1400)
	emit := func(*Segment) {}
	seg := h.ack()
	seg.Opts = packet.TCPOptions{HasTS: true, TSVal: h.peerTS, TSEcr: 1}
	round := func() {
		// Segments 2..5 of a window arrive before 1 (lost, then
		// retransmitted): stored, SACKed, then the hole fills.
		base := h.tcb.rcvNxt
		for i := 4; i >= 0; i-- {
			seg.Seq, seg.Payload = base.Add(uint32(i*1400)), payload
			h.tcb.Input(&seg, h.now)
			h.tcb.Output(h.now, emit)
		}
		h.tcb.Read(buf)
	}
	round()
	if allocs := testing.AllocsPerRun(200, round); allocs != 0 {
		t.Errorf("%v allocations per round", allocs)
	}
	if h.tcb.ooo.count() != 0 || h.tcb.rcvBuf.len() != 0 {
		t.Errorf("ranges %d, buffered %d after the round", h.tcb.ooo.count(), h.tcb.rcvBuf.len())
	}
}

// --- Receive-buffer auto-tuning. ---

// autotuneBuffers: a 16 KiB buffer that may grow to 256 KiB.
func autotuneBuffers(c *Config) { c.RecvBufSize, c.RecvBufMax = 16<<10, 256<<10 }

// tunePeer plays a peer that sends, once per round trip, what the window
// it last saw allows (or at most limit bytes), with an application that
// reads everything or nothing. It checks on every ACK that the window
// stays backed by buffer space and the right edge never moves left.
type tunePeer struct {
	h      *harness
	edge   Seq // the right edge the peer knows
	maxWnd uint32
	adv    Seq    // our RCV.NXT+RCV.WND as last seen
	tsEcr  uint32 // the TSval the peer echoes this round
	lastTS uint32 // the TSval of our newest ACK, echoed from the next round
	buf    []byte
}

// newTunePeer starts the peer's data one round trip after the handshake
// gave it our window and timestamp.
func newTunePeer(h *harness, rtt time.Duration) *tunePeer {
	h.now = h.now.Add(rtt)
	return &tunePeer{h: h, edge: h.tcb.rcvAdv, adv: h.tcb.rcvAdv, tsEcr: h.tcb.tsNow(), lastTS: h.tcb.tsNow(), buf: make([]byte, 64<<10)}
}

func (p *tunePeer) acks() {
	t, tcb := p.h.t, p.h.tcb
	t.Helper()
	for _, s := range p.h.take() {
		p.lastTS = s.Opts.TSVal
		e := s.Ack.Add(uint32(s.Wnd) << tcb.rcvShift)
		p.edge = p.edge.Max(e)
		p.maxWnd = max(p.maxWnd, uint32(e-s.Ack))
	}
	if tcb.rcvAdv.LessThan(p.adv) {
		t.Fatalf("right edge moved left by %d", p.adv-tcb.rcvAdv)
	}
	p.adv = tcb.rcvAdv
	if int(tcb.rcvWnd()) > tcb.rcvBuf.free() {
		t.Fatalf("window %d beyond the free buffer %d", tcb.rcvWnd(), tcb.rcvBuf.free())
	}
}

func (p *tunePeer) round(rtt time.Duration, limit uint32, read bool) {
	h := p.h
	h.t.Helper()
	end := p.edge // what the ACKs of the last round allow
	p.tsEcr = p.lastTS
	if limit > 0 && h.peerNxt.Add(limit).LessThan(end) {
		end = h.peerNxt.Add(limit)
	}
	for h.peerNxt.LessThan(end) {
		seg := h.data(pattern(0, int(min(uint32(segSize), uint32(end-h.peerNxt)))))
		// The peer echoes the newest timestamp it has seen from us.
		if h.tcb.tsOK {
			h.peerTS++
			seg.Opts.HasTS, seg.Opts.TSVal, seg.Opts.TSEcr = true, h.peerTS, p.tsEcr
		}
		h.in(seg)
		for read {
			if n, _ := h.tcb.Read(p.buf); n == 0 {
				break
			}
		}
		h.output()
		p.acks()
	}
	h.advance(rtt)
	p.acks()
}

func TestRecvBuf_GrowsWhileAppDrainsAndPeerFillsTheWindow(t *testing.T) {
	for _, ts := range []bool{true, false} {
		t.Run(fmt.Sprintf("timestamps=%v", ts), func(t *testing.T) {
			h := established(t, autotuneBuffers, func(c *Config) { c.Timestamps = ts })
			p := newTunePeer(h, 10*time.Millisecond)
			prev := h.tcb.rcvBuf.cap()
			for range 12 {
				p.round(10*time.Millisecond, 0, true)
				c := h.tcb.rcvBuf.cap()
				if c > 2*prev {
					t.Fatalf("buffer grew from %d to %d in one round trip, want at most double", prev, c)
				}
				prev = c
			}
			if c := h.tcb.rcvBuf.cap(); c != 256<<10 {
				t.Fatalf("buffer %d after 12 window-limited round trips, want RecvBufMax %d", c, 256<<10)
			}
			if p.maxWnd < 128<<10 {
				t.Fatalf("largest window advertised %d, want the grown buffer's (> 128 KiB)", p.maxWnd)
			}
			if h.tcb.rcvRTT != 10*time.Millisecond {
				t.Fatalf("receiver RTT estimate %v, want 10ms", h.tcb.rcvRTT)
			}
		})
	}
}

func TestRecvBuf_DoesNotGrowWhenTheAppDoesNotRead(t *testing.T) {
	h := established(t, autotuneBuffers)
	p := newTunePeer(h, 10*time.Millisecond)
	for range 12 {
		p.round(10*time.Millisecond, 0, false)
	}
	if c := h.tcb.rcvBuf.cap(); c != 16<<10 || h.tcb.rcvWnd() != 0 {
		t.Fatalf("buffer %d window %d, want 16 KiB and a closed window", c, h.tcb.rcvWnd())
	}
}

func TestRecvBuf_DoesNotGrowForASlowSender(t *testing.T) {
	h := established(t, autotuneBuffers)
	p := newTunePeer(h, 10*time.Millisecond)
	for range 20 {
		p.round(10*time.Millisecond, 6<<10, true) // under half the buffer per RTT
	}
	if c := h.tcb.rcvBuf.cap(); c != 16<<10 {
		t.Fatalf("buffer grew to %d for a peer sending 6 KiB per RTT", c)
	}
}

func TestRecvBuf_GrowthStopsAt64KiBWithoutWindowScaling(t *testing.T) {
	h := newHarness(t, autotuneBuffers)
	syn := h.peerSyn()
	syn.Opts.HasWScale = false
	h.open(syn)
	h.one()
	h.in(h.ack())
	h.wantState(Established)
	p := newTunePeer(h, 10*time.Millisecond)
	for range 12 {
		p.round(10*time.Millisecond, 0, true)
	}
	if c := h.tcb.rcvBuf.cap(); c != maxWindowField {
		t.Fatalf("buffer %d without window scaling, want %d (what the window field holds)", c, maxWindowField)
	}
}

func TestRecvBuf_GrowthKeepsOutOfOrderData(t *testing.T) {
	h := established(t, autotuneBuffers)
	stream := pattern(0, 12<<10)
	base := h.peerNxt
	// The ring wraps: read 10 KiB through it first.
	h.in(h.data(stream[:5<<10]))
	h.in(h.data(stream[5<<10 : 10<<10]))
	got := make([]byte, 0, len(stream))
	buf := make([]byte, 64<<10)
	n, _ := h.tcb.Read(buf)
	got = append(got, buf[:n]...)
	// A segment beyond a hole, then an in-order one that triggers growth
	// (the application read more than half the buffer in over an RTT).
	ooo := h.ack()
	ooo.Seq, ooo.Payload = base.Add(11<<10), stream[11<<10:]
	h.in(ooo)
	h.tcb.rcvRTT, h.tcb.drsDue = time.Millisecond, h.now
	h.advance(time.Millisecond)
	h.in(h.data(stream[10<<10 : 10<<10+100]))
	if c := h.tcb.rcvBuf.cap(); c != 32<<10 {
		t.Fatalf("buffer %d, want grown to 32 KiB", c)
	}
	h.peerNxt = base.Add(10<<10 + 100)
	h.in(h.data(stream[10<<10+100 : 11<<10]))
	if h.tcb.rcvNxt != base.Add(12<<10) || h.tcb.ooo.count() != 0 {
		t.Fatalf("RCV.NXT at %d, %d ranges: the hole did not join the stored data", h.tcb.rcvNxt-base, h.tcb.ooo.count())
	}
	n, _ = h.tcb.Read(buf)
	got = append(got, buf[:n]...)
	if !bytes.Equal(got, stream) {
		t.Fatalf("read %d bytes, data differs from the stream after the buffer grew", len(got))
	}
}
