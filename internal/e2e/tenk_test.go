package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/bench"
	"github.com/tungate/tungate/internal/gwproc"
	"github.com/tungate/tungate/internal/netlab"
)

// tenK is the number of concurrent connections of TestTenThousand: each
// costs a descriptor in this process (the client), one in the gateway
// (its upstream socket) and one in the echo server's process, so it fits
// the machine's hard limit of 20,000 open files per process.
const tenK = 10000

// netlabSocketPool is how many ready TCP sockets netlab keeps per address
// family for a namespace's dials.
const netlabSocketPool = 64

// TestTenThousandConnections_OpenAtOnceAndLeaveNothingBehind holds 10,000
// relayed connections open at once through each stack, each after a
// one-byte echo, then closes them, and checks that the gateway's file
// descriptors and goroutines (read from outside: /proc/PID/fd and the
// --memprofile log line) and this process's descriptors return to where
// they were.
func TestTenThousandConnections_OpenAtOnceAndLeaveNothingBehind(t *testing.T) {
	for _, kind := range stacks {
		t.Run(kind, func(t *testing.T) { tenThousand(t, kind) })
	}
}

func tenThousand(t *testing.T, kind string) {
	heap := filepath.Join(t.TempDir(), "heap.prof")
	e := startGateway(t, kind, "--log-level", "info", "--memprofile", heap)
	addr := startEcho(t, e.lab)
	pid := e.cmd.Process.Pid

	// The own engine's relays run on events: the first one makes the
	// proxy's poller, an epoll descriptor and the goroutine waiting on
	// it, kept for the gateway's life.
	once := 0
	if kind == "custom" {
		once = 1
	}
	gwFDs0, gor0 := countFDs(t, pid)+once, gatewayGoroutines(t, e, pid)+once
	ownFDs0 := countFDs(t, os.Getpid())
	conns := make([]net.Conn, tenK)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	next := make(chan int, tenK)
	for i := range tenK {
		next <- i
	}
	close(next)
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			buf := []byte{0}
			for i := range next {
				c, err := e.dial(context.Background(), addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(30 * time.Second))
					if _, err = c.Write(buf); err == nil {
						_, err = io.ReadFull(c, buf)
					}
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("connection %d: %w", i, err):
					default:
					}
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	t.Logf("%d connections open in %v", tenK, time.Since(start).Round(time.Millisecond))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case err := <-errs:
		t.Fatalf("%v\n%s", err, tail(e.logs(), 20))
	default:
	}
	if n := countFDs(t, pid) - gwFDs0; n < tenK {
		t.Fatalf("the gateway holds %d more descriptors with %d connections open, want at least one each", n, tenK)
	}
	gor := gatewayGoroutines(t, e, pid)
	t.Logf("gateway: %d goroutines before, %d with the connections open", gor0, gor)
	if kind == "custom" && gor-gor0 > 100 {
		// The own engine's relays run on events: an idle connection
		// has no goroutine.
		t.Errorf("the gateway runs %d more goroutines with %d idle connections; want none per connection", gor-gor0, tenK)
	}

	for i, c := range conns {
		c.Close()
		conns[i] = nil
	}
	// The gateway closes its upstream sockets once the relays see the
	// FINs; allow it a moment, then nothing may be left.
	waitUntil(t, 30*time.Second, "the gateway's descriptors to return", func() bool { return countFDs(t, pid) <= gwFDs0 })
	waitUntil(t, 30*time.Second, "the gateway's goroutines to return", func() bool { return gatewayGoroutines(t, e, pid) <= gor0 })
	// netlab keeps up to 64 ready sockets per kind for the namespace's
	// dials and refills them as they are used: slack, not a leak.
	if n := countFDs(t, os.Getpid()); n > ownFDs0+netlabSocketPool {
		t.Errorf("this process holds %d descriptors after closing, %d before", n, ownFDs0)
	}
}

// startEcho runs `gateway bench-echo` in the server namespace, a process of
// its own so that the server ends do not count against this process's
// descriptors, and returns its address.
func startEcho(t *testing.T, lab *netlab.Lab) string {
	t.Helper()
	srv, err := bench.StartEcho(context.Background(), lab.Server(), gwproc.Command{Path: gatewayBin, Env: cleanEnv()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr()
}

// countFDs counts the open descriptors of process pid.
func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

var goroutinesRE = regexp.MustCompile(`msg=memory .*goroutines=(\d+)`)

// gatewayGoroutines asks the gateway for its goroutine count (SIGUSR1,
// answered by the --memprofile log line).
func gatewayGoroutines(t *testing.T, e *env, pid int) int {
	t.Helper()
	seen := len(goroutinesRE.FindAllString(e.logs(), -1))
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var n int
	waitUntil(t, 10*time.Second, "the gateway's memory line", func() bool {
		all := goroutinesRE.FindAllStringSubmatch(e.logs(), -1)
		if len(all) <= seen {
			return false
		}
		n, _ = strconv.Atoi(all[len(all)-1][1])
		return true
	})
	return n
}

// waitUntil polls cond until it holds or d has passed.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
