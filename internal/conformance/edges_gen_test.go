package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The */edges corpus probes the window edges of the synchronized states
// other than ESTABLISHED with one segment per script. Expectations come
// from RFC 9293 §3.10.7.4 and RFC 5961, written down in edgeCases; set
// UPDATE_GOLDEN=1 to rewrite the scripts after changing them.

// edgeState is a synchronized state reached after the handshake: its
// prefix drives the connection there, leaving RCV.NXT = rcvNxt, SND.NXT =
// sndNxt and the advertised window rcvWnd.
type edgeState struct {
	name, dir      string
	about          string // what the state means, for the script comment
	prefix         string
	rcvNxt, sndNxt uint32
	rcvWnd         uint32
	header         string   // header flags line, if any
	only           []string // case names to generate; all when empty
}

const edgeHandshake = `0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0  bind(3, ..., ...) = 0
+0  listen(3, 1) = 0
+0  < S 0:0(0) win 65535 <mss 1000>
+0  > S. 0:0(0) ack 1 win 65535 <mss 1460>
+.01 < . 1:1(0) ack 1 win 65535
+0  accept(3, ..., ...) = 4
`

const (
	toFinWait1  = "+.1 shutdown(4, SHUT_WR) = 0\n+0  > F. 1:1(0) ack 1 win 65535\n"
	toCloseWait = "+.1 < F. 1:1(0) ack 1 win 65535\n+0  > . 1:1(0) ack 2 win 65534\n"
)

func edgeStates() []edgeState {
	return []edgeState{
		{name: "fin-wait-1", dir: "finwait", about: "our FIN sent, not yet acked",
			prefix: toFinWait1, rcvNxt: 1, sndNxt: 2, rcvWnd: 65535},
		{name: "fin-wait-2", dir: "finwait", about: "our FIN acked, no FIN from the peer",
			prefix: toFinWait1 + "+.01 < . 1:1(0) ack 2 win 65535\n", rcvNxt: 1, sndNxt: 2, rcvWnd: 65535},
		{name: "closing", dir: "finwait", about: "both FINs sent, ours not yet acked",
			prefix: toFinWait1 + "+.01 < F. 1:1(0) ack 1 win 65535\n+0  > . 2:2(0) ack 2 win 65534\n",
			rcvNxt: 2, sndNxt: 2, rcvWnd: 65534},
		{name: "close-wait", dir: "closewait", about: "the peer's FIN received, ours not sent",
			prefix: toCloseWait, rcvNxt: 2, sndNxt: 1, rcvWnd: 65534},
		{name: "last-ack", dir: "closewait", about: "the peer's FIN received, ours sent, not yet acked",
			prefix: toCloseWait + "+.1 close(4) = 0\n+0  > F. 1:1(0) ack 2 win 65534\n",
			rcvNxt: 2, sndNxt: 2, rcvWnd: 65534},
		// RFC 1337 makes TIME-WAIT ignore RSTs and RFC 6191 lets a SYN
		// reopen it (both in timewait/), so only the ACK check applies.
		{name: "time-wait", dir: "timewait", about: "both FINs sent and acked",
			header: "--msl2_ms=60000\n",
			prefix: toFinWait1 + "+.01 < F. 1:1(0) ack 2 win 65535\n+0  > . 2:2(0) ack 2 win 65534\n",
			rcvNxt: 2, sndNxt: 2, rcvWnd: 65534, only: []string{"ack-beyond-snd-nxt"}},
	}
}

func (st edgeState) wants(c edgeCase) bool {
	return len(st.only) == 0 || slices.Contains(st.only, c.name)
}

// edgeCase is one probe: the segment sent in state st, what the engine
// must answer, and whether the connection survives.
type edgeCase struct {
	name  string
	why   string
	probe func(st edgeState) string
	// challenge: the engine answers with an ACK <SEQ=SND.NXT><ACK=RCV.NXT>.
	challenge bool
	resets    bool
}

func edgeCases() []edgeCase {
	rst := func(off func(st edgeState) uint32) func(st edgeState) string {
		return func(st edgeState) string {
			q := off(st)
			return fmt.Sprintf("< R %d:%d(0) win 0", q, q)
		}
	}
	return []edgeCase{
		{name: "rst-exact", resets: true,
			why:   "A RST at exactly RCV.NXT resets the connection (RFC 5961 §3.2, RFC 9293 §3.10.7.4 second check).",
			probe: rst(func(st edgeState) uint32 { return st.rcvNxt })},
		{name: "rst-in-window", challenge: true,
			why:   "A RST inside the window but not at RCV.NXT gets a challenge ACK and does not reset (RFC 5961 §3.2).",
			probe: rst(func(st edgeState) uint32 { return st.rcvNxt + 100 })},
		{name: "rst-last-in-window", challenge: true,
			why: "A RST at RCV.NXT+RCV.WND-1, the last octet inside the window (RFC 9293 §3.10.7.4\n" +
				"// acceptability), gets a challenge ACK (RFC 5961 §3.2).",
			probe: rst(func(st edgeState) uint32 { return st.rcvNxt + st.rcvWnd - 1 })},
		{name: "rst-right-edge",
			why: "A RST at RCV.NXT+RCV.WND, the first number outside the window, is dropped\n" +
				"// silently (RFC 5961 §3.2, RFC 9293 §3.10.7.4 first check).",
			probe: rst(func(st edgeState) uint32 { return st.rcvNxt + st.rcvWnd })},
		{name: "rst-left-of-window",
			why:   "A RST below RCV.NXT is outside the window and dropped silently (RFC 9293 §3.10.7.4).",
			probe: rst(func(st edgeState) uint32 { return st.rcvNxt - 1 })},
		{name: "syn-in-window", challenge: true,
			why: "A SYN, even inside the window, gets a challenge ACK and does not reset\n" +
				"// (RFC 5961 §4.2, RFC 9293 §3.10.7.4 fourth check).",
			probe: func(st edgeState) string {
				q := st.rcvNxt + 99
				return fmt.Sprintf("< S %d:%d(0) win 65535 <mss 1000>", q, q)
			}},
		{name: "ack-beyond-snd-nxt", challenge: true,
			why: "An ACK of data never sent is dropped and answered with an ACK (RFC 5961 §5.2,\n" +
				"// RFC 9293 §3.10.7.4 fifth check).",
			probe: func(st edgeState) string {
				return fmt.Sprintf("< . %d:%d(0) ack %d win 65535", st.rcvNxt, st.rcvNxt, st.sndNxt+1000)
			}},
	}
}

// edgeScript renders case c in state st. After the probe a plain ACK of
// everything we sent checks the outcome: a live connection takes it
// silently, a reset one answers it with a RST (RFC 9293 §3.10.7.1).
func edgeScript(st edgeState, c edgeCase) string {
	var b strings.Builder
	b.WriteString(st.header)
	b.WriteString("// Generated by edges_gen_test.go; do not edit.\n")
	fmt.Fprintf(&b, "// In %s (%s):\n// %s\n", strings.ToUpper(st.name), st.about, c.why)
	b.WriteString(edgeHandshake)
	b.WriteString(st.prefix)
	fmt.Fprintf(&b, "+.01 %s\n", c.probe(st))
	if c.challenge {
		fmt.Fprintf(&b, "+0  > . %d:%d(0) ack %d win %d\n", st.sndNxt, st.sndNxt, st.rcvNxt, st.rcvWnd)
	}
	fmt.Fprintf(&b, "+.01 < . %d:%d(0) ack %d win 65535\n", st.rcvNxt, st.rcvNxt, st.sndNxt)
	if c.resets {
		fmt.Fprintf(&b, "+0  > R %d:%d(0)\n", st.sndNxt, st.sndNxt)
	}
	return b.String()
}

func TestEdgeScripts_MatchGenerator(t *testing.T) {
	update := os.Getenv("UPDATE_GOLDEN") == "1"
	n := 0
	for _, st := range edgeStates() {
		dir := filepath.Join(corpusDir, st.dir, "edges")
		if update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range edgeCases() {
			if !st.wants(c) {
				continue
			}
			n++
			path := filepath.Join(dir, st.name+"-"+c.name+".pkt")
			want := edgeScript(st, c)
			if update {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with UPDATE_GOLDEN=1 to generate)", err)
			}
			if string(got) != want {
				t.Errorf("%s differs from the generator; rerun with UPDATE_GOLDEN=1", path)
			}
		}
	}
	if n != 36 {
		t.Errorf("%d edge scripts; want 36", n)
	}
}
