package tcp

import (
	"sync"
	"time"
)

// timerQueue orders flows by their TCB's next deadline: an indexed
// min-heap, so that re-arming a flow's timer (which happens on most
// segments) is O(log n) and allocation-free. One goroutine per engine
// sleeps until the earliest deadline.
type timerQueue struct {
	mu   sync.Mutex // guards h and every flow's heapIdx and deadline
	h    []*flow
	wake chan struct{} // signalled when the earliest deadline moves earlier
	done chan struct{} // closed by stop
	once sync.Once
}

func (q *timerQueue) init() {
	q.wake = make(chan struct{}, 1)
	q.done = make(chan struct{})
}

func (q *timerQueue) stop() { q.once.Do(func() { close(q.done) }) }

// set (re)arms f for at; a zero at disarms it.
func (q *timerQueue) set(f *flow, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if at.IsZero() {
		q.removeLocked(f)
		return
	}
	if f.heapIdx >= 0 {
		if f.deadline.Equal(at) {
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
	if q.h[0] == f {
		signal(q.wake)
	}
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
func (q *timerQueue) next() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) == 0 {
		return time.Time{}
	}
	return q.h[0].deadline
}

// popDue appends to due every flow whose deadline is not after now and
// disarms them.
func (q *timerQueue) popDue(now time.Time, due []*flow) []*flow {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.h) > 0 && !q.h[0].deadline.After(now) {
		f := q.h[0]
		q.removeLocked(f)
		due = append(due, f)
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

// timerLoop runs due TCB timers until the engine closes.
func (e *Engine) timerLoop() {
	defer e.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []*flow
	for {
		var c <-chan time.Time
		if next := e.timers.next(); !next.IsZero() {
			t.Reset(max(time.Until(next), 0))
			c = t.C
		}
		select {
		case <-e.timers.done:
			return
		case <-e.timers.wake:
		case <-c:
		}
		due = e.runTimers(e.now(), due[:0])
	}
}

// RunTimers fires the timers due at now. It is for engines built with
// Options.ManualTimers; the timer goroutine does this otherwise.
func (e *Engine) RunTimers(now time.Time) { e.runTimers(now, nil) }

// runTimers fires every due flow's timers; due is scratch space.
func (e *Engine) runTimers(now time.Time, due []*flow) []*flow {
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
