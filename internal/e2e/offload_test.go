package e2e

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/netlab"
)

// TestOffloadPath: on the own engine the default is the superpacket path
// with one TUN queue per CPU (at most 8), and bulk data crosses it whole
// both ways, intact; with --offload off the same transfer goes as
// segments. The gateway's closing stats say which path carried it.
func TestOffloadPath(t *testing.T) {
	wantQueues := min(runtime.NumCPU(), 8)
	for _, tc := range []struct {
		name string
		args []string
		on   bool
	}{
		{"auto", nil, true},
		{"off", []string{"--offload", "off"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startGateway(t, "custom", tc.args...)
			const size = 8 << 20
			up := make(chan [32]byte, 1)
			addr := e.listen(t, netlab.ServerAddr4+":0", func(c *net.TCPConn) {
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				n, sum, err := drain(c)
				if err != nil || n != size {
					t.Errorf("server read %d bytes, err %v", n, err)
				}
				up <- sum
				if _, err := stream(c, size, 2); err != nil {
					t.Errorf("server write: %v", err)
				}
				c.CloseWrite()
			})
			c, err := e.dial(context.Background(), addr)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			sent, err := stream(c, size, 1)
			if err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			if got := <-up; got != sent {
				t.Fatal("upload arrived changed")
			}
			var want [32]byte
			{
				var b strings.Builder
				want, _ = stream(&b, size, 2)
			}
			if n, got, err := drain(c); err != nil || n != size || got != want {
				t.Fatalf("download: %d bytes, err %v, intact %v", n, err, got == want)
			}
			e.stop(t)
			logs := e.logs()
			in, out := statField(t, logs, "SuperpacketsIn"), statField(t, logs, "SuperpacketsOut")
			if tc.on {
				if !strings.Contains(logs, "tun offload on") {
					t.Errorf("offload not on:\n%s", logs)
				}
				if wantQueues > 1 && !strings.Contains(logs, fmt.Sprintf("msg=\"tun queues\" name=%s queues=%d", tunName, wantQueues)) {
					t.Errorf("not %d queues:\n%s", wantQueues, logs)
				}
				if in == 0 || out == 0 {
					t.Errorf("superpackets in %d, out %d: the bulk data did not cross whole", in, out)
				}
			} else {
				if !strings.Contains(logs, "tun offload off: tun.offload is off") {
					t.Errorf("no line saying offload is off:\n%s", logs)
				}
				if in != 0 || out != 0 {
					t.Errorf("superpackets in %d, out %d with offload off", in, out)
				}
			}
		})
	}
}

// statField reads a counter from the engine stats the gateway logs at
// its stop.
func statField(t *testing.T, logs, name string) uint64 {
	t.Helper()
	m := regexp.MustCompile(name + `:(\d+)`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no %s in the gateway's closing stats:\n%s", name, logs)
	}
	v, _ := strconv.ParseUint(m[1], 10, 64)
	return v
}
