package proxytest

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Clock is a manual clock: time stands still until Advance moves it, and
// Advance runs the callbacks that fall due, in order of their due time,
// on the caller's goroutine. It satisfies proxy.Clock.
type Clock struct {
	mu      sync.Mutex // guards the fields below
	now     time.Time
	seq     uint64        // orders timers due at the same time
	timers  []*timer      // pending, unsorted
	changed chan struct{} // closed and replaced when timers is added to
}

type timer struct {
	at  time.Time
	seq uint64
	f   func()
}

// NewClock returns a Clock set to an arbitrary fixed instant.
func NewClock() *Clock {
	return &Clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f for when the clock has been advanced by d. stop
// removes it and reports whether it was still pending.
func (c *Clock) AfterFunc(d time.Duration, f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &timer{at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.timers, t)
		if i < 0 {
			return false
		}
		c.timers = slices.Delete(c.timers, i, i+1)
		return true
	}
}

// Advance moves the clock forward by d, running every callback that falls
// due on the way with the clock set to its due time. Callbacks may
// schedule further timers; those due within d run too.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		t := c.nextDueLocked(end)
		if t == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		c.now = t.at
		c.mu.Unlock()
		t.f()
	}
}

// nextDueLocked removes and returns the earliest timer due at or before
// end, nil if there is none.
func (c *Clock) nextDueLocked(end time.Time) *timer {
	var next *timer
	for _, t := range c.timers {
		if t.at.After(end) {
			continue
		}
		if next == nil || t.at.Before(next.at) || (t.at.Equal(next.at) && t.seq < next.seq) {
			next = t
		}
	}
	if next != nil {
		i := slices.Index(c.timers, next)
		c.timers = slices.Delete(c.timers, i, i+1)
	}
	return next
}

// Pending returns the number of scheduled callbacks.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitForTimers blocks until at least n callbacks are scheduled, so that a
// test advances the clock only after the code under test armed its
// timers. It fails the test after 5 s of real time.
func (c *Clock) WaitForTimers(t testing.TB, n int) {
	t.Helper()
	giveUp := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		pending, changed := len(c.timers), c.changed
		c.mu.Unlock()
		if pending >= n {
			return
		}
		select {
		case <-changed:
		case <-giveUp:
			t.Fatalf("proxytest: %d timers scheduled after 5s, want %d", pending, n)
		}
	}
}
