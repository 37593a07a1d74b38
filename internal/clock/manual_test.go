package clock

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder collects the names of fired timers and the clock reading at
// each firing.
type recorder struct {
	m     *Manual
	names []string
	at    []Time
}

func (r *recorder) fn(name string) func() {
	return func() {
		r.names = append(r.names, name)
		r.at = append(r.at, r.m.Now())
	}
}

func newRecorder(start Time) *recorder { return &recorder{m: NewManual(start)} }

func TestManual_NowMovesOnlyWithAdvanceAndSet(t *testing.T) {
	m := NewManual(100)
	if m.Now() != 100 {
		t.Fatalf("Now = %v", m.Now())
	}
	m.Advance(5)
	m.Advance(0)
	if m.Now() != 105 {
		t.Fatalf("after Advance: %v", m.Now())
	}
	m.Set(1000)
	if m.Now() != 1000 {
		t.Fatalf("after Set: %v", m.Now())
	}
	m.Set(1000) // same instant is fine
}

func TestManual_FiresDueTimersInDeadlineOrderAtTheirDeadlines(t *testing.T) {
	r := newRecorder(0)
	r.m.AfterFunc(30*time.Millisecond, r.fn("c"))
	r.m.AfterFunc(10*time.Millisecond, r.fn("a"))
	r.m.AfterFunc(20*time.Millisecond, r.fn("b"))
	r.m.AfterFunc(time.Second, r.fn("later"))

	r.m.Advance(30 * time.Millisecond)
	if want := []string{"a", "b", "c"}; !slices.Equal(r.names, want) {
		t.Fatalf("fired %v, want %v", r.names, want)
	}
	want := []Time{Time(10 * time.Millisecond), Time(20 * time.Millisecond), Time(30 * time.Millisecond)}
	if !slices.Equal(r.at, want) {
		t.Errorf("Now inside callbacks %v, want %v", r.at, want)
	}
	if r.m.Pending() != 1 {
		t.Errorf("Pending = %d, want 1", r.m.Pending())
	}
}

func TestManual_EqualDeadlinesFireInSchedulingOrder(t *testing.T) {
	r := newRecorder(0)
	for _, n := range []string{"1", "2", "3", "4", "5"} {
		r.m.AfterFunc(time.Second, r.fn(n))
	}
	r.m.Advance(time.Second)
	if want := []string{"1", "2", "3", "4", "5"}; !slices.Equal(r.names, want) {
		t.Fatalf("fired %v, want %v", r.names, want)
	}
}

func TestManual_TimerDoesNotFireBeforeItsDeadline(t *testing.T) {
	r := newRecorder(0)
	r.m.AfterFunc(time.Second, r.fn("x"))
	r.m.Advance(time.Second - 1)
	if len(r.names) != 0 {
		t.Fatal("fired a nanosecond early")
	}
	r.m.Advance(1)
	if len(r.names) != 1 {
		t.Fatal("did not fire at its deadline")
	}
	r.m.Advance(time.Hour)
	if len(r.names) != 1 {
		t.Fatal("fired twice")
	}
}

func TestManual_NonPositiveDurationFiresOnNextAdvanceWithoutMovingTime(t *testing.T) {
	r := newRecorder(50)
	r.m.AfterFunc(-time.Second, r.fn("neg"))
	r.m.AfterFunc(0, r.fn("zero"))
	if len(r.names) != 0 {
		t.Fatal("fired inside AfterFunc")
	}
	r.m.Advance(0)
	if !slices.Equal(r.names, []string{"neg", "zero"}) || !slices.Equal(r.at, []Time{50, 50}) {
		t.Fatalf("fired %v at %v", r.names, r.at)
	}
}

func TestManual_StopPreventsFiringAndReportsWhetherPending(t *testing.T) {
	r := newRecorder(0)
	stopped := r.m.AfterFunc(time.Second, r.fn("stopped"))
	fired := r.m.AfterFunc(time.Millisecond, r.fn("fired"))
	if !stopped.Stop() {
		t.Error("Stop of a pending timer returned false")
	}
	if stopped.Stop() {
		t.Error("second Stop returned true")
	}
	r.m.Advance(time.Hour)
	if !slices.Equal(r.names, []string{"fired"}) {
		t.Fatalf("fired %v", r.names)
	}
	if fired.Stop() {
		t.Error("Stop after firing returned true")
	}
	if r.m.Pending() != 0 {
		t.Errorf("Pending = %d", r.m.Pending())
	}
}

func TestManual_ResetReschedulesFromNow(t *testing.T) {
	r := newRecorder(0)
	tm := r.m.AfterFunc(time.Second, r.fn("x"))
	r.m.Advance(900 * time.Millisecond)
	if !tm.Reset(time.Second) {
		t.Error("Reset of a pending timer returned false")
	}
	r.m.Advance(900 * time.Millisecond)
	if len(r.names) != 0 {
		t.Fatal("fired at the old deadline")
	}
	r.m.Advance(100 * time.Millisecond)
	if len(r.at) != 1 || r.at[0] != Time(1900*time.Millisecond) {
		t.Fatalf("fired at %v, want 1.9s", r.at)
	}

	// A fired or stopped timer is re-armed by Reset.
	if tm.Reset(time.Second) {
		t.Error("Reset of a fired timer returned true")
	}
	r.m.Advance(time.Second)
	if len(r.names) != 2 {
		t.Fatalf("re-armed timer fired %d times in total, want 2", len(r.names))
	}
	tm.Stop()
	if tm.Reset(time.Second) {
		t.Error("Reset of a stopped timer returned true")
	}
	r.m.Advance(time.Second)
	if len(r.names) != 3 {
		t.Fatalf("timer reset after Stop did not fire")
	}
}

func TestManual_TimerScheduledInCallbackFiresInSameAdvanceWhenDue(t *testing.T) {
	r := newRecorder(0)
	r.m.AfterFunc(time.Second, func() {
		r.fn("outer")()
		r.m.AfterFunc(time.Second, r.fn("inner due"))     // at 2s
		r.m.AfterFunc(5*time.Second, r.fn("inner later")) // at 6s
		r.m.AfterFunc(0, r.fn("inner now"))               // at 1s, after outer
	})
	r.m.AfterFunc(1500*time.Millisecond, r.fn("sibling"))
	r.m.Advance(3 * time.Second)
	want := []string{"outer", "inner now", "sibling", "inner due"}
	if !slices.Equal(r.names, want) {
		t.Fatalf("fired %v, want %v", r.names, want)
	}
	if at := []Time{Time(time.Second), Time(time.Second), Time(1500 * time.Millisecond), Time(2 * time.Second)}; !slices.Equal(r.at, at) {
		t.Errorf("at %v, want %v", r.at, at)
	}
	if r.m.Now() != Time(3*time.Second) || r.m.Pending() != 1 {
		t.Errorf("Now %v Pending %d", r.m.Now(), r.m.Pending())
	}
}

func TestManual_CallbackResettingItselfActsAsTicker(t *testing.T) {
	r := newRecorder(0)
	var tm Timer
	tm = r.m.AfterFunc(100*time.Millisecond, func() {
		r.fn("tick")()
		tm.Reset(100 * time.Millisecond)
	})
	r.m.Advance(time.Second)
	if len(r.at) != 10 || r.at[9] != Time(time.Second) {
		t.Fatalf("ticked %d times, last at %v", len(r.at), r.at[len(r.at)-1])
	}
}

func TestManual_CallbackStoppingAnotherDueTimerCancelsIt(t *testing.T) {
	r := newRecorder(0)
	var victim Timer
	r.m.AfterFunc(time.Second, func() {
		r.fn("first")()
		if !victim.Stop() {
			t.Error("Stop of a due but not yet run timer returned false")
		}
	})
	victim = r.m.AfterFunc(time.Second, r.fn("victim"))
	r.m.Advance(2 * time.Second)
	if !slices.Equal(r.names, []string{"first"}) {
		t.Fatalf("fired %v", r.names)
	}
}

func TestManual_NextAndSetRunTheEarliestTimer(t *testing.T) {
	r := newRecorder(0)
	if _, ok := r.m.Next(); ok {
		t.Fatal("Next reported a timer on an empty clock")
	}
	r.m.AfterFunc(3*time.Second, r.fn("b"))
	r.m.AfterFunc(2*time.Second, r.fn("a"))
	next, ok := r.m.Next()
	if !ok || next != Time(2*time.Second) {
		t.Fatalf("Next = %v, %v", next, ok)
	}
	r.m.Set(next)
	if !slices.Equal(r.names, []string{"a"}) {
		t.Fatalf("fired %v", r.names)
	}
}

func TestManual_MovingBackwardsPanics(t *testing.T) {
	m := NewManual(10)
	for name, f := range map[string]func(){
		"Advance(-1)": func() { m.Advance(-1) },
		"Set(9)":      func() { m.Set(9) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
		if m.Now() != 10 {
			t.Fatalf("%s moved the clock to %v", name, m.Now())
		}
	}
}

func TestManual_ConcurrentUseFiresEachTimerAsOftenAsArmed(t *testing.T) {
	m := NewManual(0)
	const workers, perWorker = 4, 200
	var (
		mu     sync.Mutex // guards counts and want
		counts = make(map[int]int)
		want   = make(map[int]int)
	)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				id := w*perWorker + i
				tm := m.AfterFunc(time.Duration(i%7)*time.Millisecond, func() {
					mu.Lock()
					counts[id]++
					mu.Unlock()
				})
				// The advancing goroutine may run the timer at any
				// moment; the Stop and Reset results say whether it did.
				n := 1
				switch i % 3 {
				case 0:
					if tm.Stop() {
						n = 0
					}
				case 1:
					if !tm.Reset(time.Duration(i%5) * time.Millisecond) {
						n = 2
					}
				}
				mu.Lock()
				want[id] = n
				mu.Unlock()
				_ = m.Now()
			}
		})
	}
	done := make(chan struct{})
	var adv sync.WaitGroup
	adv.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				m.Advance(time.Millisecond)
			}
		}
	})
	wg.Wait()
	close(done)
	adv.Wait()
	m.Advance(time.Second) // whatever is still pending is due now

	mu.Lock()
	defer mu.Unlock()
	for id, n := range want {
		if counts[id] != n {
			t.Errorf("timer %d fired %d times, want %d", id, counts[id], n)
		}
	}
	if m.Pending() != 0 {
		t.Errorf("Pending = %d after advancing past every deadline", m.Pending())
	}
}
