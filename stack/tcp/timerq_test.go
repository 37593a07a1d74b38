package tcp

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// resetCounter is a manual clock that counts its timers' Resets.
type resetCounter struct {
	*clock.Manual
	resets int
}

func (c *resetCounter) AfterFunc(d time.Duration, f func()) clock.Timer {
	return countedTimer{c.Manual.AfterFunc(d, f), c}
}

type countedTimer struct {
	clock.Timer
	c *resetCounter
}

func (t countedTimer) Reset(d time.Duration) bool {
	t.c.resets++
	return t.Timer.Reset(d)
}

// TestTimerQueue_ResetsOnlyWhenTheEarliestDeadlineMovesEarlier: the one
// timer follows the earliest deadline; a deadline moving later costs no
// Reset (the timer fires early, finds nothing due and re-arms), and due
// flows run at their own deadline, not at the end of an Advance.
func TestTimerQueue_ResetsOnlyWhenTheEarliestDeadlineMovesEarlier(t *testing.T) {
	clk := &resetCounter{Manual: clock.NewManual(pktT0)}
	var q timerQueue
	var fired []clock.Time
	var popped []*flow
	q.init(clk, func() {
		now := clk.Now()
		fired = append(fired, now)
		popped = q.popDue(now, popped)
	})
	f1, f2 := &flow{heapIdx: -1}, &flow{heapIdx: -1}
	step := func(what string, op func(), resets int) {
		t.Helper()
		clk.resets = 0
		op()
		if clk.resets != resets {
			t.Fatalf("%s: %d Resets, want %d", what, clk.resets, resets)
		}
	}
	step("first deadline", func() { q.set(f1, pktT0.Add(10*time.Second)) }, 1)
	step("it moves later", func() { q.set(f1, pktT0.Add(20*time.Second)) }, 0)
	step("an earlier one", func() { q.set(f2, pktT0.Add(5*time.Second)) }, 1)
	step("that moves later", func() { q.set(f2, pktT0.Add(6*time.Second)) }, 0)
	step("and goes", func() { q.remove(f2) }, 0)

	// The timer still fires at 5 s, finds nothing, and re-arms for f1.
	step("advance 10 s", func() { clk.Advance(10 * time.Second) }, 1)
	if len(fired) != 1 || fired[0] != pktT0.Add(5*time.Second) || len(popped) != 0 {
		t.Fatalf("after 10 s: fired at %v, popped %d; want once at +5s, nothing due", fired, len(popped))
	}
	step("advance 20 s", func() { clk.Advance(20 * time.Second) }, 0)
	if len(fired) != 2 || fired[1] != pktT0.Add(20*time.Second) || len(popped) != 1 || popped[0] != f1 {
		t.Fatalf("after 30 s: fired at %v, popped %d; want f1 at exactly +20s", fired, len(popped))
	}
	if n := clk.Pending(); n != 0 {
		t.Fatalf("%d timers pending with no deadline left", n)
	}

	q.stop()
	step("after stop", func() { q.set(f1, clk.Now().Add(time.Second)) }, 0)
	if n := clk.Pending(); n != 0 {
		t.Fatalf("%d timers pending after stop", n)
	}
}

// TestTimerQueue_RearmDoesNotAllocate: moving the earliest deadline
// earlier, which resets the real clock's timer, allocates nothing.
func TestTimerQueue_RearmDoesNotAllocate(t *testing.T) {
	clk := clock.Real()
	var q timerQueue
	q.init(clk, func() {})
	defer q.stop()
	f := &flow{heapIdx: -1}
	at := clk.Now().Add(time.Hour)
	q.set(f, at)
	allocs := testing.AllocsPerRun(1000, func() {
		at = at.Add(-time.Millisecond) // earlier every time: a Reset each
		q.set(f, at)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per re-arm, want 0", allocs)
	}
}

// TestEngine_TimersStopAtClose: Close stops the engine's timer, and a
// callback that comes anyway (one racing Close) does nothing.
func TestEngine_TimersStopAtClose(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 10, flags: packet.SYN})
	r := h.request()
	go func() { _, _ = r.Accept(context.Background()) }()
	h.expectOne("SYN-ACK")
	if n := h.clk.Pending(); n != 1 {
		t.Fatalf("%d timers pending with a SYN-ACK out; want the engine's one", n)
	}
	h.e.Close()
	h.take()
	if n := h.clk.Pending(); n != 0 {
		t.Fatalf("%d timers pending after Close", n)
	}
	h.e.fireTimers() // as a callback that fired just before Close stopped the timer
	h.advance(10 * time.Minute)
	h.expectNone("timers after Close")
}

// gateWriter blocks the first write after armed is set until release is
// closed.
type gateWriter struct {
	capture
	armed            atomic.Bool
	entered, release chan struct{}
}

func (w *gateWriter) WritePackets(bufs [][]byte, offset int) (int, error) {
	if w.armed.CompareAndSwap(true, false) {
		close(w.entered)
		<-w.release
	}
	return w.capture.WritePackets(bufs, offset)
}

// TestEngine_CloseWaitsForARunningTimerCallback: Close does not return
// while a timer callback is still running, here blocked writing the
// SYN-ACK it retransmits.
func TestEngine_CloseWaitsForARunningTimerCallback(t *testing.T) {
	h := &pktHarness{t: t, clk: clock.NewManual(pktT0), reqs: make(chan stack.Request, 1)}
	w := &gateWriter{capture: capture{h}, entered: make(chan struct{}), release: make(chan struct{})}
	opts := DefaultOptions()
	opts.Clock = h.clk
	e, err := New(w, chanHandler{h.reqs}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	t.Cleanup(func() { e.Close() })
	h.send(seg{seq: 10, flags: packet.SYN})
	r := h.request()
	go func() { _, _ = r.Accept(context.Background()) }()
	h.expectOne("SYN-ACK")

	w.armed.Store(true)
	advanced := make(chan struct{})
	go func() { h.clk.Advance(opts.TCB.InitialRTO); close(advanced) }()
	<-w.entered // the callback is writing the retransmission
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a timer callback was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(w.release)
	for _, ch := range []chan struct{}{advanced, closed} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("Close or Advance still blocked once the callback finished")
		}
	}
}
