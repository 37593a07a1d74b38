package clock

import (
	"testing"
	"time"
)

func TestTime_Arithmetic(t *testing.T) {
	a := Time(1_500_000_000)
	b := a.Add(250 * time.Millisecond)
	if b != 1_750_000_000 || b.Sub(a) != 250*time.Millisecond || a.Sub(b) != -250*time.Millisecond {
		t.Errorf("Add/Sub: %d, %v", b, b.Sub(a))
	}
	if !a.Before(b) || a.After(b) || !b.After(a) || a.Before(a) {
		t.Error("Before/After")
	}
	if a.String() != "1.5s" {
		t.Errorf("String = %q", a.String())
	}
}

func TestReal_NowStartsAtRealStartAndNeverDecreases(t *testing.T) {
	c := Real()
	prev := c.Now()
	if prev < RealStart || prev > RealStart+Time(time.Second) {
		t.Fatalf("first Now = %v, want just after %v", prev, RealStart)
	}
	for range 1000 {
		now := c.Now()
		if now < prev {
			t.Fatalf("Now went back from %v to %v", prev, now)
		}
		prev = now
	}
}

func TestReal_AfterFuncFiresAndStopCancels(t *testing.T) {
	c := Real()
	fired := make(chan Time, 1)
	start := c.Now()
	c.AfterFunc(time.Millisecond, func() { fired <- c.Now() })
	select {
	case at := <-fired:
		if at.Sub(start) < time.Millisecond {
			t.Errorf("fired after %v, before its deadline", at.Sub(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("timer did not fire")
	}

	tm := c.AfterFunc(time.Hour, func() { t.Error("stopped timer fired") })
	if !tm.Stop() {
		t.Error("Stop of a pending timer returned false")
	}
	if tm.Stop() {
		t.Error("second Stop returned true")
	}
}

func BenchmarkRealNow(b *testing.B) {
	c := Real()
	var t Time
	for b.Loop() {
		t = c.Now()
	}
	_ = t
}

func BenchmarkTimeNow(b *testing.B) {
	var t time.Time
	for b.Loop() {
		t = time.Now()
	}
	_ = t
}
