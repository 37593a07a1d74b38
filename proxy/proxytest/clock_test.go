package proxytest_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy/proxytest"
)

func TestClock_AdvanceRunsDueCallbacksInOrder(t *testing.T) {
	c := proxytest.NewClock()
	start := c.Now()
	var got []string
	var at []time.Duration
	record := func(name string) func() {
		return func() {
			got = append(got, name)
			at = append(at, c.Now().Sub(start))
		}
	}
	c.AfterFunc(3*time.Second, record("c"))
	c.AfterFunc(time.Second, record("a"))
	c.AfterFunc(time.Second, record("b")) // same time: scheduling order
	c.AfterFunc(10*time.Second, record("late"))

	c.Advance(5 * time.Second)
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	if want := []time.Duration{time.Second, time.Second, 3 * time.Second}; !slices.Equal(at, want) {
		t.Fatalf("ran at %v, want %v", at, want)
	}
	if d := c.Now().Sub(start); d != 5*time.Second {
		t.Fatalf("clock at %v after Advance(5s)", d)
	}
	if c.Pending() != 1 {
		t.Fatalf("%d pending, want the late one", c.Pending())
	}
}

func TestClock_StopCancelsPendingCallback(t *testing.T) {
	c := proxytest.NewClock()
	ran := false
	stop := c.AfterFunc(time.Second, func() { ran = true })
	if !stop() {
		t.Fatal("stop of a pending timer reported false")
	}
	if stop() {
		t.Fatal("second stop reported true")
	}
	c.Advance(time.Hour)
	if ran {
		t.Fatal("stopped callback ran")
	}
}

func TestClock_CallbackScheduledDuringAdvanceRunsIfDue(t *testing.T) {
	c := proxytest.NewClock()
	var ticks int
	var tick func()
	tick = func() {
		ticks++
		c.AfterFunc(time.Second, tick)
	}
	c.AfterFunc(time.Second, tick)
	c.Advance(5 * time.Second)
	if ticks != 5 {
		t.Fatalf("%d ticks in 5 s, want 5", ticks)
	}
}

func TestClock_WaitForTimersReturnsOnceScheduled(t *testing.T) {
	c := proxytest.NewClock()
	go func() {
		time.Sleep(10 * time.Millisecond)
		c.AfterFunc(time.Second, func() {})
	}()
	c.WaitForTimers(t, 1)
	if c.Pending() != 1 {
		t.Fatalf("%d pending", c.Pending())
	}
}
