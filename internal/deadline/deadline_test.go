package deadline

import (
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

func TestDeadline_PastExpiresAtOnceAndZeroClears(t *testing.T) {
	d := New(clock.NewManual(clock.RealStart))
	if d.Expired() {
		t.Fatal("a new deadline has expired")
	}
	d.Set(time.Now().Add(-time.Second))
	if !d.Expired() {
		t.Fatal("a past deadline has not expired")
	}
	d.Set(time.Time{})
	if d.Expired() {
		t.Fatal("clearing the deadline left it expired")
	}
}

func TestDeadline_FutureExpiresWhenTheClockGetsThere(t *testing.T) {
	clk := clock.NewManual(clock.RealStart)
	d := New(clk)
	d.Set(time.Now().Add(time.Minute))
	done := d.Done()
	clk.Advance(59 * time.Second)
	if d.Expired() {
		t.Fatal("expired a second early")
	}
	clk.Advance(time.Second)
	select {
	case <-done:
	default:
		t.Fatal("a waiter on Done was not woken at the deadline")
	}
}

func TestDeadline_MovingItLaterCancelsTheEarlierTimer(t *testing.T) {
	clk := clock.NewManual(clock.RealStart)
	d := New(clk)
	d.Set(time.Now().Add(time.Second))
	d.Set(time.Now().Add(time.Hour))
	clk.Advance(time.Minute) // well past the first deadline
	if d.Expired() {
		t.Fatal("a superseded timer expired the deadline")
	}
	clk.Advance(time.Hour)
	if !d.Expired() {
		t.Fatal("the later deadline did not expire")
	}
}

func TestDeadline_StopCancelsThePendingTimer(t *testing.T) {
	clk := clock.NewManual(clock.RealStart)
	d := New(clk)
	d.Set(time.Now().Add(time.Second))
	d.Stop()
	if clk.Pending() != 0 {
		t.Fatalf("%d timers pending after Stop", clk.Pending())
	}
	clk.Advance(time.Hour)
	if d.Expired() {
		t.Fatal("a stopped deadline expired")
	}
}

func TestDeadline_RealClockFires(t *testing.T) {
	d := New(nil)
	d.Set(time.Now().Add(10 * time.Millisecond))
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline never fired")
	}
}
