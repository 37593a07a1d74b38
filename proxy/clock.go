package proxy

import "time"

// Clock is the time source of the proxy's timers: connect, idle and
// half-close timeouts. Tests substitute a manual clock (see
// proxytest.Clock); nil in Options means the system clock.
type Clock interface {
	// Now returns the current time.
	Now() time.Time

	// AfterFunc calls f, on a goroutine of the clock's choosing, once d
	// has elapsed. stop cancels the call and reports whether it did so;
	// false means f has already been called or started.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// systemClock is Clock on the time package.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}
