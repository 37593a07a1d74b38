package tcp

import (
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// wirePair is an allocation-free back-to-back connection for benchmarks:
// segments are copied into preallocated slots and delivered in order.
type wirePair struct {
	tcb   [2]*TCB
	now   clock.Time
	slots [2][]slot // slots[i]: segments in flight to side i
	n     [2]int
	emit  [2]func(*Segment)
	rbuf  []byte
	wbuf  []byte
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
	if d := w.tcb[1].Deadline(); d != 0 && !w.now.Before(d) {
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

// runTimers runs the due timers of both sides and delivers what they send.
func (w *wirePair) runTimers() {
	for _, t := range w.tcb {
		if d := t.Deadline(); d != 0 && !w.now.Before(d) {
			t.OnTimer(w.now)
		}
	}
	w.exchange()
}

// drain reads everything side i has received.
func (w *wirePair) drain(i int) int {
	total := 0
	for {
		n, _ := w.tcb[i].Read(w.rbuf)
		if n == 0 {
			return total
		}
		total += n
	}
}

// request is one exchange of a request/response protocol after think
// time: side 0 sends req bytes, side 1 answers with resp bytes.
func (w *wirePair) request(req, resp int, think time.Duration) int {
	w.now = w.now.Add(think)
	w.runTimers()
	w.tcb[0].Write(w.wbuf[:req])
	w.exchange()
	got := w.drain(1)
	w.tcb[1].Write(w.wbuf[:resp])
	w.exchange()
	got += w.drain(0)
	w.exchange()
	return got
}

// BenchmarkTCBRequestResponse measures small exchanges with think time
// below and above Config.BufferIdle: above it, every request finds the
// buffers released and allocates them again (what releasing a buffer as
// soon as it empties would cost on every request).
func BenchmarkTCBRequestResponse(b *testing.B) {
	for _, think := range []time.Duration{10 * time.Millisecond, 2 * time.Second} {
		b.Run("think="+think.String(), func(b *testing.B) {
			w := newWirePair(b)
			w.request(200, 1200, think)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if w.request(200, 1200, think) != 1400 {
					b.Fatal("exchange incomplete")
				}
			}
		})
	}
}

func TestRequestResponse_WithinBufferIdleDoesNotAllocate(t *testing.T) {
	w := newWirePair(t)
	w.request(200, 1200, 0)
	allocs := testing.AllocsPerRun(100, func() {
		if w.request(200, 1200, 100*time.Millisecond) != 1400 {
			t.Fatal("exchange incomplete")
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per request, want 0", allocs)
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
