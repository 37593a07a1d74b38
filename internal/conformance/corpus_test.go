package conformance

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

const corpusDir = "../../stack/tcp/testdata/pkt"

// TestCorpus_PassesInStrictMode runs every script of the engine's own
// corpus; each is a subtest so a failure names its script and line.
func TestCorpus_PassesInStrictMode(t *testing.T) {
	files, err := Collect([]string{corpusDir})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("corpus has %d scripts; want at least 30", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimPrefix(f, corpusDir+"/"), func(t *testing.T) {
			res := RunFile(f, Options{})
			if res.Status != Pass {
				t.Errorf("%s %s:%d: %s\n%s", res.Status, res.Path, res.Line, res.Text, res.Message)
			}
		})
	}
}

const handshake = `0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0 bind(3, ..., ...) = 0
+0 listen(3, 1) = 0
+0 < S 0:0(0) win 65535 <mss 1000,nop,nop,sackOK>
+0 > S. 0:0(0) ack 1 win 65535 <mss 1460,nop,nop,sackOK>
+.01 < . 1:1(0) ack 1 win 65535
+0 accept(3, ..., ...) = 4
`

func runText(t *testing.T, text string, opts Options) Result {
	t.Helper()
	s, err := Parse("inline.pkt", text, ParseOptions{Defines: opts.Defines})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return RunScript(s, opts)
}

func TestRunner_FailsOnWrongAckWithLineAndBothSegments(t *testing.T) {
	res := runText(t, handshake+"+0 < P. 1:11(10) ack 1 win 65535\n+.04 > . 1:1(0) ack 12 win 65525\n", Options{})
	if res.Status != Fail || res.Line != 9 {
		t.Fatalf("got %+v; want FAIL at line 9", res)
	}
	if !strings.Contains(res.Message, "ack 11") || !strings.Contains(res.Message, "want 12") {
		t.Errorf("message %q does not say what was sent and expected", res.Message)
	}
}

func TestRunner_FailsWhenSegmentComesOutsideTolerance(t *testing.T) {
	// The delayed ACK comes after 40 ms, not 20.
	res := runText(t, handshake+"+0 < P. 1:11(10) ack 1 win 65535\n+.02 > . 1:1(0) ack 11 win 65525\n", Options{})
	if res.Status != Fail || !strings.Contains(res.Message, "nothing") {
		t.Fatalf("got %+v; want FAIL: nothing sent in time", res)
	}
}

func TestRunner_FailsOnUnexpectedSegment(t *testing.T) {
	res := runText(t, handshake+"+0 < P. 1:11(10) ack 1 win 65535\n+1 read(4, ..., 100) = 10\n", Options{})
	if res.Status != Fail || !strings.Contains(res.Message, "unexpected") {
		t.Fatalf("got %+v; want FAIL for the unexpected delayed ACK", res)
	}
}

func TestRunner_FailsOnWrongReturnValue(t *testing.T) {
	res := runText(t, handshake+"+0 read(4, ..., 100) = 5\n", Options{})
	if res.Status != Fail || !strings.Contains(res.Message, "-1 EAGAIN") {
		t.Fatalf("got %+v; want FAIL: read returned -1 EAGAIN", res)
	}
}

func TestRunner_LenientIgnoresWindowAndOptionValuesButNotSACK(t *testing.T) {
	linux := `0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0 setsockopt(3, SOL_TCP, TCP_NODELAY, [1], 4) = 0
+0 bind(3, ..., ...) = 0
+0 listen(3, 1) = 0
+0 < S 0:0(0) win 32792 <mss 1000,sackOK,nop,nop,nop,wscale 7>
+0 > S. 0:0(0) ack 1 win 29200 <mss 1460,nop,nop,sackOK,nop,wscale 9>
+.01 < . 1:1(0) ack 1 win 257
+0 accept(3, ..., ...) = 4
+0 < . 1001:2001(1000) ack 1 win 257
`
	if res := runText(t, linux+"+0 > . 1:1(0) ack 1 win 400 <nop,nop,sack 1001:2001>\n", Options{Lenient: true}); res.Status != Pass {
		t.Errorf("lenient: %+v; want PASS", res)
	}
	if res := runText(t, linux+"+0 > . 1:1(0) ack 1 win 400 <nop,nop,sack 1001:2002>\n", Options{Lenient: true}); res.Status != Fail {
		t.Errorf("lenient with a wrong SACK block: %+v; want FAIL", res)
	}
}

func TestRunner_SkipsActiveOpen(t *testing.T) {
	res := runText(t, "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 connect(3, ..., ...) = -1 EINPROGRESS (x)\n", Options{})
	if res.Status != Skip || !strings.Contains(res.Message, "connect") {
		t.Fatalf("got %+v; want SKIP naming connect", res)
	}
}

func TestParse_CommentsShellLinesAndIfdef(t *testing.T) {
	text := "--tolerance_usecs=10000\n/* block\ncomment */ // line\n`echo hi`\n#ifdef LINUX\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n#else\n0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 7\n#endif\n+0.1~+0.2 > S. 0:0(0) ack 1 <mss 1460,TS val 1 ecr 2,sack 1:2 3:4>\n* < R 1:1(0)\n"
	s, err := Parse("x.pkt", text, ParseOptions{Defines: map[string]bool{"LINUX": true}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Flags["tolerance_usecs"] != "10000" || len(s.Events) != 3 {
		t.Fatalf("flags %v, %d events; want tolerance and 3 events", s.Flags, len(s.Events))
	}
	if s.Events[0].Call.Ret != 3 || s.Events[0].Line != 6 {
		t.Errorf("#ifdef picked %+v; want the LINUX branch at line 6", s.Events[0])
	}
	ev := s.Events[1]
	if !ev.Relative || !ev.HasEnd || ev.Start.Milliseconds() != 100 || ev.End.Milliseconds() != 200 {
		t.Errorf("range time parsed as %+v", ev)
	}
	if o := ev.Seg.Opts; len(o) != 3 || o[1].Ecr != 2 || len(o[2].Sacks) != 2 {
		t.Errorf("options parsed as %+v", o)
	}
	if !s.Events[2].AnyTime {
		t.Errorf("* not parsed as any time")
	}
}

func TestRunAll_PrintsSummaryLineLast(t *testing.T) {
	var out bytes.Buffer
	_, sum, err := RunAll(&out, []string{corpusDir + "/listen"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if lines[len(lines)-1] != sum.String() || sum.Passed == 0 || sum.Failed != 0 {
		t.Errorf("last line %q, summary %+v", lines[len(lines)-1], sum)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
