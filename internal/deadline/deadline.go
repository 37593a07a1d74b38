// Package deadline implements net.Conn-style I/O deadlines as channels,
// for connections whose blocking calls wait in a select. The wall-clock
// deadline a caller sets is turned into a timer on a clock.Clock, so tests
// with a clock.Manual decide exactly when it passes.
package deadline

import (
	"sync"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// Deadline is one direction's I/O deadline as a channel that is closed when
// the deadline passes, so that a blocked call selects on it next to its
// wake-up channel.
type Deadline struct {
	// mu guards the fields below.
	mu    sync.Mutex
	clk   clock.Clock
	ch    chan struct{} // closed once the deadline has passed
	timer clock.Timer   // pending expiry, nil when none
	gen   uint64        // identifies the current timer to its callback
}

// New returns a Deadline with no deadline set whose timers run on clk
// (nil means clock.Real()).
func New(clk clock.Clock) *Deadline {
	if clk == nil {
		clk = clock.Real()
	}
	return &Deadline{clk: clk, ch: make(chan struct{})}
}

// Set moves the deadline to t: the zero time removes it, a time in the
// past expires it at once (waking calls blocked on Done). A time in the
// future passes when the clock has moved by time.Until(t).
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++ // a timer that fires from now on is stale
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	expired := isClosed(d.ch)
	if t.IsZero() {
		if expired {
			d.ch = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !expired {
			close(d.ch)
		}
		return
	}
	if expired {
		d.ch = make(chan struct{})
	}
	gen, ch := d.gen, d.ch
	d.timer = d.clk.AfterFunc(dur, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.gen == gen {
			close(ch)
			d.timer = nil
		}
	})
}

// Done returns the channel that is closed when the current deadline
// passes.
func (d *Deadline) Done() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// Expired reports whether the deadline has passed.
func (d *Deadline) Expired() bool { return isClosed(d.Done()) }

// Stop cancels a pending timer, for a closed connection.
func (d *Deadline) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
