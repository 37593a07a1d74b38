package conformance

import (
	"strings"
	"testing"
)

// A multi-line call, as Linux's packetdrill scripts write setsockopt, and
// an inline Python block over two lines.
const multiLine = `0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0  setsockopt(3, SOL_SOCKET, SO_REUSEADDR,
               [1], 4) = 0
+0  bind(3, ..., ...) = 0
+0  listen(3, 1) = 0
+0  < S 0:0(0) win 65535 <mss 1460>
+0  > S. 0:0(0) ack 1 win 65535 <mss 1460>
+.01 < . 1:1(0) ack 1 win 512
+0  accept(3, ..., ...) = 4
+0  %{ assert tcpi_state == 1
       assert tcpi_rto > 0 }%
+.1 < P. 1:11(10) ack 1 win 65535
+0  read(4, ..., 100) = 10
`

func TestParse_MultiLineCallIsOneEvent(t *testing.T) {
	s, err := Parse("x.pkt", multiLine, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ev := s.Events[1]
	if ev.Kind != Syscall || ev.Call.Name != "setsockopt" || ev.Line != 2 || len(ev.Call.Args) != 5 || ev.Call.Args[3] != "[1]" {
		t.Fatalf("event 1: %+v; want setsockopt from line 2 with its 5 arguments", ev)
	}
	if len(s.Events) != 10 {
		t.Errorf("%d events, want 10 (the Python block is no event)", len(s.Events))
	}
	if s.PythonLine != 10 {
		t.Errorf("PythonLine %d, want 10", s.PythonLine)
	}
	if last := s.Events[len(s.Events)-1]; last.Line != 13 {
		t.Errorf("the last event is on line %d, want 13: the block keeps line numbers", last.Line)
	}
}

func TestRunner_InlinePythonSkipsInStrictModeAndIsIgnoredWhenLenient(t *testing.T) {
	res := runText(t, multiLine, Options{})
	if res.Status != Skip || !strings.Contains(res.Message+res.Text, "line 10: inline Python") {
		t.Errorf("strict: %+v; want SKIP naming line 10's inline Python", res)
	}
	if res := runText(t, multiLine, Options{Lenient: true}); res.Status != Pass {
		t.Errorf("lenient: %s at line %d: %s %s", res.Status, res.Line, res.Text, res.Message)
	}
}
