package tcp

import (
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// wirePair is an allocation-free back-to-back connection for benchmarks:
// segments are copied into preallocated slots and delivered in order.
type wirePair struct {
	tcb   [2]*TCB
	now   time.Time
	slots [2][]slot // slots[i]: segments in flight to side i
	n     [2]int
	emit  [2]func(*Segment)
	rbuf  []byte
	wbuf  []byte
	read  int
}

type slot struct {
	seg Segment
	buf []byte
}

func newWirePair(tb testing.TB) *wirePair {
	cfg := testConfig()
	cfg.RecvBufSize = 1 << 20
	w := &wirePair{now: t0, rbuf: make([]byte, 64<<10), wbuf: pattern(0, 64<<10)}
	for i := range w.slots {
		w.slots[i] = make([]slot, 4096)
		for j := range w.slots[i] {
			w.slots[i][j].buf = make([]byte, 0, cfg.MSS)
		}
	}
	w.emit[0] = func(s *Segment) { w.push(1, s) }
	w.emit[1] = func(s *Segment) { w.push(0, s) }
	w.tcb[0] = NewSynSent(&cfg, testISS, 1, w.now)
	w.tcb[0].Output(w.now, func(s *Segment) {
		w.tcb[1] = NewSynReceived(&cfg, s, testIRS, 2, w.now)
	})
	for range 4 {
		w.exchange()
	}
	if w.tcb[0].State() != Established || w.tcb[1].State() != Established {
		tb.Fatalf("handshake failed: %v %v", w.tcb[0].State(), w.tcb[1].State())
	}
	return w
}

func (w *wirePair) push(to int, s *Segment) {
	sl := &w.slots[to][w.n[to]]
	w.n[to]++
	sl.seg = *s
	sl.buf = append(sl.buf[:0], s.Payload...)
	sl.seg.Payload = sl.buf
}

// exchange runs Output on both sides and delivers everything.
func (w *wirePair) exchange() {
	for i := range w.tcb {
		w.tcb[i].Output(w.now, w.emit[i])
	}
	for to := range w.slots {
		for j := range w.n[to] {
			w.tcb[to].Input(&w.slots[to][j].seg, w.now)
		}
		w.n[to] = 0
	}
}

// round moves up to one write buffer from side 0 to side 1.
func (w *wirePair) round() int {
	w.now = w.now.Add(100 * time.Microsecond)
	w.tcb[0].Write(w.wbuf)
	w.exchange()
	moved := 0
	for {
		n, _ := w.tcb[1].Read(w.rbuf)
		if n == 0 {
			break
		}
		moved += n
	}
	w.exchange()
	if d := w.tcb[1].Deadline(); !d.IsZero() && !w.now.Before(d) {
		w.tcb[1].OnTimer(w.now)
	}
	return moved
}

func BenchmarkTCBTransfer(b *testing.B) {
	w := newWirePair(b)
	for range 50 { // warm up: grow cwnd
		w.round()
	}
	b.ReportAllocs()
	b.ResetTimer()
	var total int
	for b.Loop() {
		total += w.round()
	}
	b.SetBytes(int64(total / max(b.N, 1)))
}

func TestTCBTransfer_SteadyStateDoesNotAllocate(t *testing.T) {
	w := newWirePair(t)
	for range 50 {
		w.round()
	}
	moved := 0
	allocs := testing.AllocsPerRun(200, func() { moved += w.round() })
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round, want 0", allocs)
	}
	if moved == 0 {
		t.Fatal("no data moved")
	}
}

func TestInputOutput_PureAckPathDoesNotAllocate(t *testing.T) {
	h := established(t)
	seg := h.ack()
	seg.Opts = packet.TCPOptions{HasTS: true, TSVal: h.peerTS, TSEcr: 1}
	emit := func(*Segment) {}
	h.tcb.SetTrace(nil)
	allocs := testing.AllocsPerRun(100, func() {
		h.tcb.Input(&seg, h.now)
		h.tcb.Output(h.now, emit)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations, want 0", allocs)
	}
}
