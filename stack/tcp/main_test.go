package tcp

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"testing"
)

// TestMain checks every state transition the tests make against the
// table in state.go and, when the whole suite ran, that each edge of the
// table was taken.
func TestMain(m *testing.M) {
	checkTransitions = true
	code := m.Run()
	if code == 0 && wholeSuite() {
		if missing := untakenTransitions(); len(missing) > 0 {
			fmt.Fprintln(os.Stderr, "tcp: no test takes these transitions of state.go:")
			for _, e := range missing {
				fmt.Fprintln(os.Stderr, "  ", e)
			}
			code = 1
		}
	}
	os.Exit(code)
}

// wholeSuite reports whether no -run, -skip or -fuzz selection was made.
func wholeSuite() bool {
	for _, name := range []string{"test.run", "test.skip", "test.fuzz"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

func untakenTransitions() []string {
	takenMu.Lock()
	defer takenMu.Unlock()
	var out []string
	for e, why := range transitions {
		if !taken[e] {
			out = append(out, fmt.Sprintf("%v → %v (%s)", e[0], e[1], why))
		}
	}
	slices.Sort(out)
	return out
}

func TestSetState_PanicsOnAnIllegalTransition(t *testing.T) {
	h := established(t)
	defer func() {
		if recover() == nil {
			t.Error("ESTABLISHED → LAST-ACK was allowed")
		}
	}()
	h.tcb.setState(LastAck, "skipping CLOSE-WAIT")
}
