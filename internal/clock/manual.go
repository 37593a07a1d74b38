package clock

import (
	"container/heap"
	"sync"
	"time"
)

// Manual is a Clock that moves only when told to, for deterministic tests.
// Its timers run synchronously, on the goroutine that calls Advance or Set,
// in deadline order (ties in the order they were scheduled), each with Now
// equal to its own deadline. A callback may schedule, stop and reset
// timers, including itself; a timer it schedules that is due within the
// current Advance also runs in it. A callback must not call Advance or Set
// (that deadlocks).
//
// All methods are safe for concurrent use. Advance and Set calls are
// serialized, so time only moves forward.
type Manual struct {
	// advanceMu serializes Advance and Set, so that one of them runs
	// its due timers to completion before another starts. It is held
	// while callbacks run.
	advanceMu sync.Mutex

	// mu guards now, timers and seq. It is never held while a callback
	// runs.
	mu     sync.Mutex
	now    Time
	timers timerHeap
	seq    uint64 // scheduling order, the tie-breaker for equal deadlines
}

var _ Clock = (*Manual)(nil)

// NewManual returns a Manual clock reading start. Tests of sequence-number
// or timestamp wrap-around can start it wherever they need.
func NewManual(start Time) *Manual { return &Manual{now: start} }

// Now returns the clock's current instant.
func (m *Manual) Now() Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// AfterFunc schedules f to run when the clock reaches Now()+d; with d <= 0
// it runs at the next Advance or Set, even Advance(0).
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	t := &manualTimer{m: m, f: f, index: -1}
	m.mu.Lock()
	m.scheduleLocked(t, d)
	m.mu.Unlock()
	return t
}

// Advance moves the clock forward by d, running every timer that becomes
// due on the way. It panics if d is negative.
func (m *Manual) Advance(d time.Duration) {
	if d < 0 {
		panic("clock: Advance with negative duration")
	}
	m.advanceMu.Lock()
	defer m.advanceMu.Unlock()
	m.mu.Lock()
	target := m.now.Add(d)
	m.mu.Unlock()
	m.runUntil(target)
}

// Set moves the clock to t, running every timer due by then. It panics if
// t is before Now: the clock is monotonic.
func (m *Manual) Set(t Time) {
	m.advanceMu.Lock()
	defer m.advanceMu.Unlock()
	m.mu.Lock()
	if t < m.now {
		m.mu.Unlock()
		panic("clock: Set to a time before Now")
	}
	m.mu.Unlock()
	m.runUntil(t)
}

// Pending returns the number of timers scheduled and not yet run.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.timers)
}

// Next returns the deadline of the earliest pending timer, and false when
// none is pending. Set(next) runs it (and any others due by then).
func (m *Manual) Next() (Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.timers) == 0 {
		return 0, false
	}
	return m.timers[0].when, true
}

// runUntil runs due timers one at a time, each at its own deadline, then
// leaves the clock at target. The caller holds advanceMu.
func (m *Manual) runUntil(target Time) {
	for {
		m.mu.Lock()
		if len(m.timers) == 0 || m.timers[0].when > target {
			m.now = target
			m.mu.Unlock()
			return
		}
		t := heap.Pop(&m.timers).(*manualTimer)
		// A timer scheduled with d <= 0 is due at the instant it was
		// scheduled; time does not go back for it.
		m.now = max(m.now, t.when)
		f := t.f
		m.mu.Unlock()
		f()
	}
}

func (m *Manual) scheduleLocked(t *manualTimer, d time.Duration) {
	t.when = m.now.Add(max(d, 0))
	t.seq = m.seq
	m.seq++
	heap.Push(&m.timers, t)
}

// manualTimer is a Timer of a Manual clock.
type manualTimer struct {
	m *Manual
	f func()

	// Guarded by m.mu.
	when  Time
	seq   uint64
	index int // position in m.timers; -1 when not pending
}

func (t *manualTimer) Stop() bool {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&t.m.timers, t.index)
	return true
}

func (t *manualTimer) Reset(d time.Duration) bool {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	pending := t.index >= 0
	if pending {
		heap.Remove(&t.m.timers, t.index)
	}
	t.m.scheduleLocked(t, d)
	return pending
}

// timerHeap orders timers by deadline, then by scheduling order. It keeps
// each timer's index current so that Stop and Reset can remove it.
type timerHeap []*manualTimer

func (h timerHeap) Len() int { return len(h) }

func (h timerHeap) Less(i, j int) bool {
	if h[i].when != h[j].when {
		return h[i].when < h[j].when
	}
	return h[i].seq < h[j].seq
}

func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *timerHeap) Push(x any) {
	t := x.(*manualTimer)
	t.index = len(*h)
	*h = append(*h, t)
}

func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}
