package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// watchdog fires once a flow has been inactive for its current limit.
// Activity is a timestamp stored on every read (one atomic store, no
// timer reset per read); the timer wakes at the earliest moment the limit
// could have passed and re-arms itself for the remainder when there was
// activity since.
type watchdog struct {
	clock  clock.Clock
	origin clock.Time
	// last is the time of the latest activity, as nanoseconds since
	// origin.
	last atomic.Int64

	mu        sync.Mutex    // guards the fields below
	limit     time.Duration // 0: no timeout
	reason    error         // passed to expire
	stopTimer func() bool   // the armed timer's stop, nil when none
	stopped   bool          // stop was called or the watchdog fired
	gen       uint64        // counts arms; a timer of an older arm is stale
	expire    func(reason error)
}

// newWatchdog starts a watchdog that calls expire(reason) after limit of
// inactivity; limit 0 disables it until setLimit.
func newWatchdog(c clock.Clock, limit time.Duration, reason error, expire func(error)) *watchdog {
	w := &watchdog{clock: c, origin: c.Now(), expire: expire}
	w.setLimit(limit, reason)
	return w
}

// touch records activity now.
func (w *watchdog) touch() {
	w.last.Store(int64(w.clock.Now().Sub(w.origin)))
}

// setLimit records activity now and replaces the limit and the reason
// reported when it expires.
func (w *watchdog) setLimit(limit time.Duration, reason error) {
	w.touch()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.limit, w.reason = limit, reason
	w.armLocked(limit)
}

func (w *watchdog) armLocked(d time.Duration) {
	if w.stopTimer != nil {
		w.stopTimer()
		w.stopTimer = nil
	}
	w.gen++
	if w.limit > 0 {
		gen := w.gen
		w.stopTimer = w.clock.AfterFunc(d, func() { w.fire(gen) }).Stop
	}
}

// fire runs when the timer of arm gen expires.
func (w *watchdog) fire(gen uint64) {
	w.mu.Lock()
	if w.stopped || gen != w.gen {
		w.mu.Unlock()
		return
	}
	idle := w.clock.Now().Sub(w.origin) - time.Duration(w.last.Load())
	if idle < w.limit {
		w.armLocked(w.limit - idle)
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.stopTimer = nil
	reason := w.reason
	w.mu.Unlock()
	w.expire(reason)
}

// stop cancels the watchdog; expire is not called after stop returns
// unless it had already started.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.stopTimer != nil {
		w.stopTimer()
		w.stopTimer = nil
	}
}
