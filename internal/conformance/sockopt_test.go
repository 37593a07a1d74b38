package conformance

import (
	"strings"
	"testing"
)

// listenWith is a listening socket configured by opts (setsockopt lines on
// fd 3), a handshake, and accept = 4.
func listenWith(opts string) string {
	return "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n" + opts + `+0 bind(3, ..., ...) = 0
+0 listen(3, 1) = 0
+0 < S 0:0(0) win 65535 <mss 1000>
+0 > S. 0:0(0) ack 1 win 65535 <mss 1460>
+.01 < . 1:1(0) ack 1 win 65535
+0 accept(3, ..., ...) = 4
`
}

// Two small writes back to back: Nagle holds the second until the first
// is acknowledged; with TCP_NODELAY both leave at once.
const twoSmallWrites = `+0 write(4, ..., 10) = 10
+0 > P. 1:11(10) ack 1
+0 write(4, ..., 10) = 10
+0 > P. 11:21(10) ack 1
`

func TestSockopt_NoDelayBeforeDataTurnsNagleOff(t *testing.T) {
	nodelay := "+0 setsockopt(3, SOL_TCP, TCP_NODELAY, [1], 4) = 0\n"
	if res := runText(t, listenWith(nodelay)+twoSmallWrites, Options{}); res.Status != Pass {
		t.Errorf("with TCP_NODELAY: %+v; want PASS", res)
	}
	if res := runText(t, listenWith("")+twoSmallWrites, Options{}); res.Status != Fail {
		t.Errorf("without TCP_NODELAY: %+v; want FAIL (Nagle holds the second write)", res)
	}
}

func TestSockopt_EngineWideOptionAfterDataIsSkippedInStrictMode(t *testing.T) {
	script := listenWith("") + `+0 write(4, ..., 10) = 10
+0 > P. 1:11(10) ack 1
+0 setsockopt(4, SOL_TCP, TCP_NODELAY, [1], 4) = 0
`
	res := runText(t, script, Options{})
	if res.Status != Skip || !strings.Contains(res.Message, "TCP_NODELAY set after data moved") {
		t.Fatalf("strict: %+v; want SKIP saying TCP_NODELAY came after data", res)
	}
	if res := runText(t, script, Options{Lenient: true}); res.Status != Pass {
		t.Errorf("lenient: %+v; want PASS", res)
	}
}

func TestSockopt_LingerZeroMakesCloseAbort(t *testing.T) {
	for _, tc := range []struct{ name, opts, close string }{
		{"on the accepted socket", "", "+0 setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0\n"},
		{"inherited from the listener", "+0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := listenWith(tc.opts) + tc.close + "+0 close(4) = 0\n+0 > R. 1:1(0) ack 1\n"
			if res := runText(t, script, Options{}); res.Status != Pass {
				t.Errorf("%+v; want PASS (RST on close)", res)
			}
		})
	}
	off := listenWith("+0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=0, linger=0}, 8) = 0\n") +
		"+0 close(4) = 0\n+0 > F. 1:1(0) ack 1\n"
	if res := runText(t, off, Options{}); res.Status != Pass {
		t.Errorf("onoff=0: %+v; want PASS (an ordinary FIN)", res)
	}
	timed := listenWith("+0 setsockopt(3, SOL_SOCKET, SO_LINGER, {onoff=1, linger=5}, 8) = 0\n")
	if res := runText(t, timed, Options{}); res.Status != Skip || !strings.Contains(res.Message, "SO_LINGER") {
		t.Errorf("a lingering close: %+v; want SKIP naming SO_LINGER", res)
	}
}

func TestSockopt_KeepaliveOptionsEnableProbes(t *testing.T) {
	opts := `+0 setsockopt(3, SOL_SOCKET, SO_KEEPALIVE, [1], 4) = 0
+0 setsockopt(3, SOL_TCP, TCP_KEEPIDLE, [2], 4) = 0
+0 setsockopt(3, SOL_TCP, TCP_KEEPINTVL, [1], 4) = 0
+0 setsockopt(3, SOL_TCP, TCP_KEEPCNT, [1], 4) = 0
`
	script := listenWith(opts) + `+2 > . 0:0(0) ack 1
+1 read(4, ..., 10) = -1 ETIMEDOUT (Connection timed out)
`
	if res := runText(t, script, Options{}); res.Status != Pass {
		t.Errorf("%+v; want PASS (a probe after 2 s, given up after one more interval)", res)
	}
	if res := runText(t, listenWith("")+"+2 > . 0:0(0) ack 1\n", Options{}); res.Status != Fail {
		t.Errorf("without SO_KEEPALIVE: %+v; want FAIL (no probe)", res)
	}
}

func TestSockopt_GetsockoptAndUnknownOptionsAreSkippedWithTheirReason(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"+0 getsockopt(4, SOL_TCP, TCP_INFO, {tcpi_state=TCP_ESTABLISHED}, 4) = 0\n", "TCP_INFO is the kernel's own statistics"},
		{"+0 getsockopt(4, SOL_SOCKET, SO_ERROR, [0], [4]) = 0\n", "socket state"},
		{"+0 setsockopt(4, SOL_SOCKET, SO_RCVBUF, [65536], 4) = 0\n", "--recv_buf"},
		{"+0 setsockopt(4, SOL_TCP, TCP_FOO, [1], 4) = 0\n", "TCP_FOO: no engine equivalent"},
	} {
		script := listenWith("") + tc.line
		res := runText(t, script, Options{})
		if res.Status != Skip || !strings.Contains(res.Message, tc.want) || !strings.Contains(res.Message, "--lenient") {
			t.Errorf("%q strict: %+v; want SKIP saying %q and naming --lenient", tc.line, res, tc.want)
		}
		if res := runText(t, script, Options{Lenient: true}); res.Status != Pass {
			t.Errorf("%q lenient: %+v; want PASS", tc.line, res)
		}
	}
}

func TestVectorCalls_ReadAndWriteTheSumOfTheirIovecs(t *testing.T) {
	script := listenWith("") + `+0 < P. 1:11(10) ack 1 win 65535
+0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 4}], msg_flags=0}, MSG_PEEK) = 4
+0 readv(4, [{..., 3}, {..., 100}], 2) = 10
+0 sendmsg(4, {msg_name(...)=..., msg_iov(2)=[{..., 600}, {..., 400}], msg_flags=0}, 0) = 1000
+0 > P. 1:1001(1000) ack 11
+0 writev(4, [{..., 5}], 1) = 5
`
	if res := runText(t, script, Options{}); res.Status != Pass {
		t.Fatalf("%+v; want PASS", res)
	}
}

func TestVectorCalls_AncillaryDataIsSkipped(t *testing.T) {
	script := listenWith("") + "+0 recvmsg(4, {msg_name(...)=..., msg_iov(1)=[{..., 4}], msg_control(32)=[...], msg_flags=0}, 0) = 4\n"
	res := runText(t, script, Options{Lenient: true})
	if res.Status != Skip || !strings.Contains(res.Message, "msg_control") {
		t.Fatalf("%+v; want SKIP naming msg_control", res)
	}
}
