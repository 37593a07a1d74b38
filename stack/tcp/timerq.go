package tcp

import (
	"sync"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// timerQueue orders flows by their TCB's next deadline: an indexed
// min-heap, so that re-arming a flow's timer (which happens on most
// segments) is O(log n) and allocation-free. One clock.Timer per engine
// waits for the earliest deadline. It is reset only when that deadline
// moves earlier than the timer's: a deadline that moves later (an RTO
// pushed back by an ACK, a delayed ACK sent early) leaves the timer to
// fire early, find nothing due and re-arm, which costs one callback
// instead of a Reset per segment.
type timerQueue struct {
	clk   clock.Clock
	timer clock.Timer // calls Engine.fireTimers

	mu      sync.Mutex // guards h, armedAt, stopped and every flow's heapIdx and deadline
	h       []*flow
	armedAt clock.Time // when timer is due; 0 when it is not pending
	stopped bool       // the engine closed: never arm again

	runMu sync.Mutex // serializes fireTimers; guards due
	due   []*flow    // fireTimers' scratch space
}

// init makes the queue's timer, not pending, on clk.
func (q *timerQueue) init(clk clock.Clock, fire func()) {
	q.clk = clk
	// A Clock makes only scheduled timers: schedule this one far away
	// and cancel it at once; set arms it when a flow has a deadline.
	q.timer = clk.AfterFunc(time.Hour, fire)
	q.timer.Stop()
}

// stop cancels the timer for good. A callback already on its way finds
// the engine closed (see fireTimers).
func (q *timerQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	q.armedAt = 0
	q.timer.Stop()
}

// armLocked makes the timer fire by at: it resets it only when it is not
// pending or pending for later. Resetting under q.mu cannot deadlock: a
// Clock holds none of its locks while it calls back (Manual runs the
// callback on the goroutine that advances it, after releasing its
// mutex), so the callback's path to q.mu never waits on the clock.
func (q *timerQueue) armLocked(at clock.Time) {
	if q.stopped || (q.armedAt != 0 && !at.Before(q.armedAt)) {
		return
	}
	q.armedAt = at
	q.timer.Reset(at.Sub(q.clk.Now()))
}

// set (re)arms f for at; a zero at disarms it.
func (q *timerQueue) set(f *flow, at clock.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if at == 0 {
		q.removeLocked(f)
		return
	}
	if f.heapIdx >= 0 {
		if f.deadline == at {
			return
		}
		f.deadline = at
		q.fix(f.heapIdx)
	} else {
		f.deadline = at
		f.heapIdx = len(q.h)
		q.h = append(q.h, f)
		q.up(f.heapIdx)
	}
	q.armLocked(q.h[0].deadline)
}

func (q *timerQueue) remove(f *flow) {
	q.mu.Lock()
	q.removeLocked(f)
	q.mu.Unlock()
}

func (q *timerQueue) removeLocked(f *flow) {
	i := f.heapIdx
	if i < 0 {
		return
	}
	last := len(q.h) - 1
	q.swap(i, last)
	q.h[last] = nil
	q.h = q.h[:last]
	f.heapIdx = -1
	if i < last {
		q.fix(i)
	}
}

// next returns the earliest deadline, zero if none.
func (q *timerQueue) next() clock.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) == 0 {
		return 0
	}
	return q.h[0].deadline
}

// popDue appends to due every flow whose deadline is not after now and
// disarms them, then arms the timer for the earliest deadline left. It
// runs when the timer has fired, so the timer is not pending unless a
// set since then reset it; resetting it again replaces that schedule.
func (q *timerQueue) popDue(now clock.Time, due []*flow) []*flow {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.h) > 0 && !q.h[0].deadline.After(now) {
		f := q.h[0]
		q.removeLocked(f)
		due = append(due, f)
	}
	q.armedAt = 0
	if len(q.h) > 0 {
		q.armLocked(q.h[0].deadline)
	}
	return due
}

func (q *timerQueue) less(i, j int) bool { return q.h[i].deadline.Before(q.h[j].deadline) }

func (q *timerQueue) swap(i, j int) {
	q.h[i], q.h[j] = q.h[j], q.h[i]
	q.h[i].heapIdx = i
	q.h[j].heapIdx = j
}

func (q *timerQueue) fix(i int) {
	if !q.down(i) {
		q.up(i)
	}
}

func (q *timerQueue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

func (q *timerQueue) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(q.h) {
			break
		}
		m := l
		if r := l + 1; r < len(q.h) && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			break
		}
		q.swap(i, m)
		i = m
	}
	return i > start
}

// fireTimers is the timer's callback: it runs the TCB timers due at the
// clock's Now. It counts itself in e.wg, so that Close does not return
// while it runs, and does nothing once the engine is closed: the Add
// happens under e.mu before Close sets e.closed and so before its Wait.
func (e *Engine) fireTimers() {
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		return
	}
	e.wg.Add(1)
	e.mu.RUnlock()
	defer e.wg.Done()
	q := &e.timers
	q.runMu.Lock()
	defer q.runMu.Unlock()
	q.due = e.runTimers(e.clk.Now(), q.due[:0])
}

// runTimers fires every due flow's timers; due is scratch space.
func (e *Engine) runTimers(now clock.Time, due []*flow) []*flow {
	due = e.timers.popDue(now, due)
	if len(due) == 0 {
		return due
	}
	b := e.getBatch()
	for i, f := range due {
		f.onTimer(now, b)
		due[i] = nil
	}
	e.putBatch(b)
	return due
}
