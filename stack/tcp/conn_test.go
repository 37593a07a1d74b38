package tcp

import (
	"errors"
	"math"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// TestConn_ReadDeadlinePassesOnTheEngineClock: a blocked Read fails with
// os.ErrDeadlineExceeded at the instant the engine's clock reaches its
// deadline, not a nanosecond before, however long that takes in real
// time: the deadline is a timer of the engine's clock, not of the wall.
func TestConn_ReadDeadlinePassesOnTheEngineClock(t *testing.T) {
	h := newPktHarness(t, nil)
	c, iss := h.establish(nearWrap)
	h.advance(time.Minute) // past the handshake's timers: an idle connection has none
	h.take()
	if n := h.clk.Pending(); n != 0 {
		t.Fatalf("%d timers pending on an idle connection", n)
	}
	if err := c.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	conn := c.(*Conn)
	conn.f.mu.Lock()
	dl := conn.readDeadline
	conn.f.mu.Unlock()
	if d := dl.Sub(h.clk.Now()); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("deadline %v after now; want just under the hour set", d)
	}

	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	// The Read is blocked once its deadline timer is on the clock.
	waitFor(t, "the Read's deadline timer", func() bool { at, ok := h.clk.Next(); return ok && at == dl })

	h.clk.Set(dl - 1)
	select {
	case err := <-done:
		t.Fatalf("Read returned %v a nanosecond before its deadline", err)
	default:
	}
	if at, ok := h.clk.Next(); !ok || at != dl || h.clk.Pending() != 1 {
		t.Fatalf("a nanosecond before the deadline the clock's timers are %d, next %v; want the Read's alone, at %v", h.clk.Pending(), at, dl)
	}

	h.clk.Set(dl)
	select {
	case err := <-done:
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Read at its deadline: %v; want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked once the clock reached its deadline")
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v; want os.ErrDeadlineExceeded at once", err)
	}

	// Clearing the deadline makes data readable again.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	h.send(seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK | packet.PSH, data: []byte("x")})
	if n, err := c.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("Read without deadline: %d, %v", n, err)
	}
}

// TestConn_PastDeadlineFailsAtOnce: a deadline in the past fails the
// next Read without the clock moving (the idiom that unblocks a reader).
func TestConn_PastDeadlineFailsAtOnce(t *testing.T) {
	h := newPktHarness(t, nil)
	c, _ := h.establish(nearWrap)
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read with a past deadline: %v; want os.ErrDeadlineExceeded", err)
	}
}

func TestDeadlineAt_ConvertsWallClockToTheEngineClock(t *testing.T) {
	now := clock.Time(5 * time.Second)
	if got := deadlineAt(now, time.Time{}); got != 0 {
		t.Errorf("zero time: %v; want 0, no deadline", got)
	}
	if got := deadlineAt(now, time.Unix(1, 0)); got != now {
		t.Errorf("past time: %v; want now, %v", got, now)
	}
	if got := deadlineAt(now, time.Now().Add(time.Minute)); got <= now.Add(59*time.Second) || got > now.Add(time.Minute) {
		t.Errorf("a minute ahead: %v; want just under %v", got, now.Add(time.Minute))
	}
	if got := deadlineAt(now, time.Unix(1<<62, 0)); got != math.MaxInt64 {
		t.Errorf("far future: %v; want the latest instant, not an overflow", got)
	}
}

// waitFor polls cond until it holds, failing after 5 s. It synchronizes
// with another goroutine; it decides no outcome.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(100 * time.Microsecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
