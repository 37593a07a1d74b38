package conformance

import (
	"strings"
	"testing"
)

// Syntax of third-party scripts the runner reads.

func TestParse_AnyOptionsTabsAndMultiLineShell(t *testing.T) {
	script := "0\tsocket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n" +
		"+0 `sysctl -q net.ipv4.tcp_timestamps=0\n" +
		"sysctl -q net.ipv4.tcp_sack=1 (with a parenthesis`\n" +
		"+0 bind(3, ..., ...) = 0\n" +
		"+0 listen(3, 1) = 0\n" +
		"+0 < S 0:0(0) win 65535 <mss 1000>\n" +
		"+0 > S. 0:0(0) ack 1 <...>\n" +
		"+.01\t<\t. 1:1(0) ack 1 win 65535\n" +
		"+0 accept(3, ..., ...) = 4\n"
	if res := runText(t, script, Options{}); res.Status != Pass {
		t.Fatalf("%+v; want PASS", res)
	}
}

func TestRunner_EWOULDBLOCKIsEAGAIN(t *testing.T) {
	if res := runText(t, handshake+"+0 read(4, ..., 100) = -1 EWOULDBLOCK (Resource temporarily unavailable)\n", Options{}); res.Status != Pass {
		t.Fatalf("%+v; want PASS", res)
	}
}

func TestRunner_InboundACKWithoutAckNumberAcksRelativeZero(t *testing.T) {
	// ack 0 relative is SND.UNA-1 here: an old duplicate ACK, acceptable,
	// so the data is taken. As an absolute 0 it would be out of range.
	script := handshake + "+0 < P. 1:11(10) win 65535\n+.04 > . 1:1(0) ack 11\n"
	if res := runText(t, script, Options{}); res.Status != Pass {
		t.Fatalf("%+v; want PASS", res)
	}
}

func TestRunner_SkipsWhatChangesTheWireEvenWhenLenient(t *testing.T) {
	for _, tc := range []struct{ script, want string }{
		{"0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 setsockopt(3, SOL_TCP, TCP_NOOPT, [1], 4) = 0\n", "TCP_NOOPT"},
		{"0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 setsockopt(3, SOL_TCP, TCP_MAXSEG, [1100], 4) = 0\n", "TCP_MAXSEG"},
		{handshake + "+0 send(4, ..., 40, MSG_MORE) = 40\n", "MSG_MORE"},
		{handshake + "+0 setsockopt(4, SOL_SOCKET, SO_SNDBUF, [21000], 4) = 0\n", "SO_SNDBUF"},
		{"0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n+0 < S 0:0(0) win 65535\n", "never listens"},
	} {
		res := runText(t, tc.script, Options{Lenient: true})
		if res.Status != Skip || !strings.Contains(res.Message, tc.want) {
			t.Errorf("%+v; want SKIP naming %s", res, tc.want)
		}
	}
}
