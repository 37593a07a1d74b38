package conformance

import (
	"strings"
	"testing"
	"time"
)

func TestParse_BlockingCallTimes(t *testing.T) {
	text := "0...0.2 accept(3, ..., ...) = 4\n+.1...0.25 read(4, ..., 10) = 10\n+0...+0.1 write(4, ..., 10) = 10\n"
	s, err := Parse("x.pkt", text, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		rel        bool
		start, end time.Duration
	}{{false, 0, 200 * time.Millisecond}, {true, 100 * time.Millisecond, 250 * time.Millisecond}, {true, 0, 100 * time.Millisecond}}
	for i, w := range want {
		ev := s.Events[i]
		if !ev.Blocking || !ev.HasEnd || ev.Relative != w.rel || ev.Start != w.start || ev.End != w.end {
			t.Errorf("event %d parsed as blocking=%v relative=%v %v...%v; want relative=%v %v...%v",
				i, ev.Blocking, ev.Relative, ev.Start, ev.End, w.rel, w.start, w.end)
		}
	}
}

func TestParse_RejectsBlockingPacketAndBackwardRange(t *testing.T) {
	for _, line := range []string{"+0...0.1 < . 1:1(0) ack 1\n", "+0.2...0.1 read(4, ..., 10) = 10\n"} {
		if _, err := Parse("x.pkt", line, ParseOptions{}); err == nil {
			t.Errorf("%q parsed; want an error", line)
		}
	}
}

func TestRunner_BlockingFixturesPassInStrictMode(t *testing.T) {
	for _, f := range []string{"testdata/blocking/accept.pkt", "testdata/blocking/read.pkt"} {
		if res := RunFile(f, Options{}); res.Status != Pass {
			t.Errorf("%s %s:%d: %s\n%s", res.Status, res.Path, res.Line, res.Text, res.Message)
		}
	}
}

// established is handshake with immediate ACKs, so that data segments
// are acknowledged at the time they arrive.
const established = "--delayed_ack_ms=0\n" + handshake

func TestRunner_BlockingReadFailsWhenItReturnsAwayFromEndTime(t *testing.T) {
	// The data, and so the return, comes at +0.1, not at the end time +0.2.
	res := runText(t, established+"+0...0.2 read(4, ..., 100) = 10\n+.1 < P. 1:11(10) ack 1 win 65535\n+0 > . 1:1(0) ack 11 win 65525\n", Options{})
	if res.Status != Fail || res.Line != 9 || !strings.Contains(res.Message, "returned at 0.110000; want 0.210000") {
		t.Fatalf("got %+v; want FAIL at line 9 naming both times", res)
	}
}

func TestRunner_BlockingReadFailsWhenItNeverReturns(t *testing.T) {
	res := runText(t, established+"+0...0.1 read(4, ..., 100) = 10\n", Options{})
	if res.Status != Fail || res.Line != 9 || !strings.Contains(res.Message, "did not return") {
		t.Fatalf("got %+v; want FAIL: read did not return", res)
	}
}

func TestRunner_BlockingCallChecksItsReturnValue(t *testing.T) {
	res := runText(t, established+"+0...0.1 read(4, ..., 100) = 20\n+.1 < P. 1:11(10) ack 1 win 65535\n+0 > . 1:1(0) ack 11 win 65525\n", Options{})
	if res.Status != Fail || res.Line != 9 || !strings.Contains(res.Message, "returned 10, want 20") {
		t.Fatalf("got %+v; want FAIL: read returned 10", res)
	}
}

func TestRunner_SystemCallWhileAnotherBlocksFails(t *testing.T) {
	res := runText(t, established+"+0...0.1 read(4, ..., 100) = 10\n+0 write(4, ..., 10) = 10\n", Options{})
	if res.Status != Fail || res.Line != 10 || !strings.Contains(res.Message, "still blocked") {
		t.Fatalf("got %+v; want FAIL at line 10: read still blocked", res)
	}
}

func TestRunner_LenientMergesSegmentsIntoSuperSegmentAndIgnoresPSH(t *testing.T) {
	const f = "testdata/lenient/tso-merge.pkt"
	if res := RunFile(f, Options{Lenient: true}); res.Status != Pass {
		t.Errorf("lenient: %s %s:%d: %s\n%s", res.Status, res.Path, res.Line, res.Text, res.Message)
	}
	if res := RunFile(f, Options{}); res.Status != Fail || res.Line != 12 {
		t.Errorf("strict: %+v; want FAIL at line 12 (MSS-sized segments, not one)", res)
	}
}

func TestRunner_LenientMergeDoesNotInventData(t *testing.T) {
	// The engine sends 3000 bytes as three segments; a 4000-byte
	// super-segment must not match.
	res := runText(t, handshake+"+0 write(4, ..., 3000) = 3000\n+0 > P. 1:4001(4000) ack 1\n", Options{Lenient: true})
	if res.Status != Fail || res.Line != 9 || !strings.Contains(res.Message, "payload 3000 bytes, want 4000") {
		t.Fatalf("got %+v; want FAIL at line 9: 3000 bytes merged, want 4000", res)
	}
}

func TestRunner_StrictModeStillChecksPSH(t *testing.T) {
	text := handshake + "+0 write(4, ..., 100) = 100\n+0 > . 1:101(100) ack 1 win 65535\n"
	if res := runText(t, text, Options{}); res.Status != Fail || !strings.Contains(res.Message, "flags P., want .") {
		t.Errorf("strict: %+v; want FAIL on the PSH flag", res)
	}
	if res := runText(t, text, Options{Lenient: true}); res.Status != Pass {
		t.Errorf("lenient: %+v; want PASS", res)
	}
}
