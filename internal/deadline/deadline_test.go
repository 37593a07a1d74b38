package deadline

import (
	"testing"
	"time"
)

func TestDeadline_PastExpiresAtOnceAndZeroClears(t *testing.T) {
	d := New()
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

func TestDeadline_FutureFiresAndWakesWaiters(t *testing.T) {
	d := New()
	d.Set(time.Now().Add(10 * time.Millisecond))
	select {
	case <-d.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline never fired")
	}
}

func TestDeadline_MovingItLaterCancelsTheEarlierTimer(t *testing.T) {
	d := New()
	d.Set(time.Now().Add(5 * time.Millisecond))
	d.Set(time.Now().Add(time.Hour))
	time.Sleep(20 * time.Millisecond) // past the first deadline
	if d.Expired() {
		t.Fatal("a superseded timer expired the deadline")
	}
	d.Stop()
}
