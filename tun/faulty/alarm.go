package faulty

import (
	"sync"

	"github.com/tungate/tungate/internal/clock"
)

// alarm calls fire once the earliest time it was set to has come. Each
// pending callback is counted in wg, so that Close can wait for callbacks
// already running.
type alarm struct {
	clk  clock.Clock
	wg   *sync.WaitGroup
	fire func()

	// mu guards the fields below.
	mu      sync.Mutex
	timer   clock.Timer // pending timer, nil when none
	at      clock.Time  // when timer fires
	gen     uint64      // identifies the current timer to its callback
	stopped bool        // set by stop; no timer is armed afterwards
}

func newAlarm(clk clock.Clock, wg *sync.WaitGroup, fire func()) *alarm {
	return &alarm{clk: clk, wg: wg, fire: fire}
}

// set makes the alarm go off at at, unless it is already set to go off
// earlier. A time already past goes off at once (with a manual clock: at
// its next Advance).
func (a *alarm) set(at clock.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped || (a.timer != nil && a.at <= at) {
		return
	}
	a.cancelLocked()
	a.gen++
	gen := a.gen
	a.at = at
	a.wg.Add(1)
	a.timer = a.clk.AfterFunc(at.Sub(a.clk.Now()), func() {
		defer a.wg.Done()
		a.mu.Lock()
		current := a.gen == gen
		if current {
			a.timer = nil
		}
		a.mu.Unlock()
		if current {
			a.fire()
		}
	})
}

// stop cancels the pending timer and keeps the alarm from being set
// again. A callback already running is not waited for here (wg is).
func (a *alarm) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	a.cancelLocked()
}

func (a *alarm) cancelLocked() {
	if a.timer != nil && a.timer.Stop() {
		a.wg.Done() // its callback will not run
	}
	a.timer = nil
}
