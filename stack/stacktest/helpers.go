package stacktest

import (
	"testing"
	"time"
)

// Eventually polls cond every millisecond until it holds, for state that
// a stack's own goroutines change (counters, flow tables), and fails the
// test after waitLimit saying what it waited for.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
