// Package clock is an injectable time source: a monotonic nanosecond
// counter and one-shot timers, with a real implementation and a manual one
// that tests drive deterministically. The TCP engine (stack/tcp, through
// its Options.Clock: its TCBs' time, their timers and its Conns'
// deadlines), the relay's timeouts (proxy), the fault injector
// (tun/faulty) and the DNS cache (dns) take one.
package clock

import (
	"time"
)

// Time is a monotonic instant, in nanoseconds since the origin of the Clock
// that produced it. It is an integer rather than a time.Time because the
// engine reads the clock and compares deadlines on every segment: an int64
// is a third of the size, compares with one instruction, and reading it
// costs only the monotonic clock, not the wall clock. Times from different
// Clocks are not comparable. An int64 of nanoseconds spans 292 years.
type Time int64

// Add returns t+d.
func (t Time) Add(d time.Duration) Time { return t + Time(d) }

// Sub returns the duration t-u.
func (t Time) Sub(u Time) time.Duration { return time.Duration(t - u) }

// Before reports whether t is earlier than u.
func (t Time) Before(u Time) bool { return t < u }

// After reports whether t is later than u.
func (t Time) After(u Time) bool { return t > u }

// String formats t as the duration since its clock's origin, as in "1.5s".
func (t Time) String() string { return time.Duration(t).String() }

// Clock reads the time and schedules callbacks. Implementations are safe for
// concurrent use.
type Clock interface {
	// Now returns the current instant. It never decreases.
	Now() Time

	// AfterFunc arranges for f to be called once, d after Now (at once
	// when d <= 0), and returns a Timer that can stop or reschedule it.
	// Which goroutine calls f depends on the Clock: Real uses a new
	// goroutine per call, Manual the goroutine that advances it. f must
	// therefore not depend on either, and must not block for long.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending call made by Clock.AfterFunc. *time.Timer satisfies it.
type Timer interface {
	// Stop cancels the call. It reports whether it did so, false when f
	// has already been called (or started) or the timer was stopped. It
	// does not wait for a running f.
	Stop() bool

	// Reset schedules the call d after the clock's Now, whether or not it
	// already ran or was stopped, replacing any pending schedule. It
	// reports whether the timer was pending.
	Reset(d time.Duration) bool
}

// Real returns the system's monotonic clock. Its first reading is
// RealStart, just after the call, and it counts up from there, so the zero
// Time, which callers use for "unset", is never one of its readings.
// Timers are time.AfterFunc timers, whose callbacks run on goroutines of
// the Go runtime.
func Real() Clock { return realClock{origin: time.Now().Add(-time.Duration(RealStart))} }

// RealStart is where a Real clock's readings start.
const RealStart = Time(time.Second)

type realClock struct {
	origin time.Time // carries a monotonic reading, so Since reads only that
}

func (c realClock) Now() Time { return Time(time.Since(c.origin)) }

func (c realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
