package gvisor

import (
	"sync"
	"time"
)

// deadline is one direction's I/O deadline: a channel that is closed when
// the deadline passes and replaced when the deadline is moved, so blocked
// calls select on it next to their wake-up channel.
type deadline struct {
	mu     sync.Mutex    // guards timer and cancel
	timer  *time.Timer   // pending expiry, nil when none
	cancel chan struct{} // closed once the deadline has passed
}

// init prepares a zero deadline: none set.
func (d *deadline) init() { d.cancel = make(chan struct{}) }

// set moves the deadline to t; the zero time removes it and a time in the
// past expires it at once, which wakes calls blocked on wait.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait until its close is done
	}
	d.timer = nil
	expired := isClosed(d.cancel)
	if t.IsZero() {
		if expired {
			d.cancel = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if !expired {
			close(d.cancel)
		}
		return
	}
	if expired {
		d.cancel = make(chan struct{})
	}
	ch := d.cancel
	d.timer = time.AfterFunc(dur, func() { close(ch) })
}

// wait returns the channel that is closed when the current deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// expired reports whether the deadline has passed.
func (d *deadline) expired() bool { return isClosed(d.wait()) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
