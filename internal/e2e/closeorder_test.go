package e2e

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tungate/tungate/internal/netlab"
)

// TestCloseOrder_ServerThatClosesFirstHoldsTimeWait: a server that sends
// its response and its FIN together (nginx with "Connection: close") is the
// active closer, so the TIME-WAIT state is the server's, not the client's.
// The client here reads exactly the response and closes at once, as wrk
// does, without waiting for the FIN: it is the passive closer only because
// the FIN came with the response, which the gateway must keep so (the FIN
// leaves on the same segment as the last data). The test counts the client
// namespace's TIME-WAIT sockets after many such exchanges, straight over
// the veth (kernel) and through the gateway: none either way. The gVisor
// stack is left out: its sender emits the FIN apart from the data even
// when corked, so about a third of its clients close first.
func TestCloseOrder_ServerThatClosesFirstHoldsTimeWait(t *testing.T) {
	const exchanges = 50
	response := []byte("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
	for _, kind := range []string{"kernel", "custom"} {
		t.Run(kind, func(t *testing.T) {
			var e *env
			if kind == "kernel" {
				e = startGateway(t, "custom")
				if err := e.lab.Unroute(); err != nil {
					t.Fatal(err)
				}
			} else {
				e = startGateway(t, kind)
			}
			addr := e.listen(t, netlab.ServerAddr4+":0", func(c *net.TCPConn) {
				buf := make([]byte, 64)
				if _, err := c.Read(buf); err != nil {
					return
				}
				// As nginx does for "Connection: close": the response
				// and the FIN in one segment (corked write, then shutdown).
				cork(t, c, 1)
				c.Write(response)
				c.CloseWrite()
				c.Close()
			})
			for i := range exchanges {
				var c net.Conn
				var err error
				if kind == "kernel" {
					c, err = (&netlab.Dialer{NS: e.lab.Client()}).DialContext(context.Background(), "tcp", addr)
				} else {
					c, err = e.dial(context.Background(), addr)
				}
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
				if _, err := io.ReadFull(c, make([]byte, len(response))); err != nil {
					t.Fatalf("exchange %d: %v", i, err)
				}
				c.Close() // a complete response: done, as a client is
			}
			// The last FINs and ACKs settle within a round trip.
			time.Sleep(100 * time.Millisecond)
			if n := timeWaitTo(t, e.lab.Client(), addr); n != 0 {
				t.Fatalf("%d of %d client connections in TIME-WAIT: the client closed first, so the server's FIN came after its data", n, exchanges)
			}
		})
	}
}

// cork sets TCP_CORK on c.
func cork(t *testing.T, c *net.TCPConn, v int) {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Error(err)
		return
	}
	rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, v); err != nil {
			t.Error(err)
		}
	})
}

// timeWaitTo counts ns's TIME-WAIT sockets to addr.
func timeWaitTo(t *testing.T, ns *netlab.NS, addr string) int {
	t.Helper()
	out, err := ns.Command(context.Background(), "ss", "-Htan", "state", "time-wait", "dst", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	n := 0
	for line := range strings.Lines(string(out)) {
		if strings.TrimSpace(line) != "" {
			n++
		}
	}
	return n
}
