package stacktest

import (
	"testing"
	"time"
)

// WaitLimit bounds every wait of the helpers below, so that a broken stack
// fails a test instead of hanging it.
const WaitLimit = waitLimit

// Eventually polls cond every millisecond until it holds, for state that
// a stack's own goroutines change (counters, flow tables), and fails the
// test after WaitLimit saying what it waited for.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(WaitLimit); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
