package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tungate/tungate/internal/netlab"
)

// gatewayBin is the gateway binary built once by TestMain.
var gatewayBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "tungate-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		gatewayBin = filepath.Join(dir, "gateway")
		build := exec.Command("go", "build", "-o", gatewayBin, "github.com/tungate/tungate/cmd/gateway")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: building the gateway:", err)
			return 1
		}
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: goroutine leak:", err)
			return 1
		}
	}
	return code
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is one running gateway in its own topology.
type env struct {
	lab    *netlab.Lab
	cmd    *exec.Cmd
	logBuf *lockedBuffer // the gateway's output, read while it runs
	done   chan error
}

const (
	// connectTimeout is the gateway's upstream connect timeout in these
	// tests: short, so the unreachable-upstream test is quick.
	connectTimeout = time.Second
	tunName        = "tungate0"
)

// startGateway builds a topology, starts `gateway run` with stack kind in
// the client namespace and routes the client's traffic into its TUN.
func startGateway(t *testing.T, kind string, extraArgs ...string) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and a TUN device")
	}
	lab, err := netlab.New(netlab.Options{})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	e := &env{lab: lab, logBuf: new(lockedBuffer), done: make(chan error, 1)}
	t.Cleanup(func() { e.stop(t) })

	args := append([]string{"run",
		"--stack", kind,
		"--tun-name", tunName,
		"--fwmark", fmt.Sprint(netlab.Fwmark),
		"--connect-timeout", connectTimeout.String(),
		"--log-level", "debug",
	}, extraArgs...)
	e.cmd = lab.Client().Command(context.Background(), gatewayBin, args...)
	e.cmd.Stdout = e.logBuf
	e.cmd.Stderr = e.logBuf
	e.cmd.Env = cleanEnv()
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	go func() { e.done <- e.cmd.Wait() }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	routed := make(chan error, 1)
	go func() { routed <- lab.RouteViaTUN(ctx, tunName) }()
	select {
	case err := <-routed:
		if err != nil {
			t.Fatalf("gateway did not come up: %v\n%s", err, e.logs())
		}
	case err := <-e.done:
		cancel()
		<-routed
		e.done <- err
		t.Fatalf("gateway exited at start: %v\n%s", err, e.logs())
	}
	return e
}

// cleanEnv drops TUNGATE_* variables: the gateway rejects unknown ones and
// the tests pass everything as flags.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TUNGATE_") {
			out = append(out, kv)
		}
	}
	return out
}

func (e *env) logs() string { return e.logBuf.String() }

// stop sends SIGTERM, expects a clean exit, and removes the topology.
func (e *env) stop(t *testing.T) {
	t.Helper()
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-e.done:
			if err != nil && !t.Failed() {
				t.Errorf("gateway exited with %v after SIGTERM\n%s", err, e.logs())
			}
			e.done <- err
		case <-time.After(15 * time.Second):
			_ = e.cmd.Process.Kill()
			t.Errorf("gateway did not stop within 15s of SIGTERM\n%s", e.logs())
		}
		e.cmd = nil
		// A clean shutdown removes the TUN.
		if _, err := e.lab.Client().Netlink().LinkByName(tunName); err == nil {
			t.Errorf("TUN %s still exists after the gateway exited", tunName)
		}
	}
	if t.Failed() {
		t.Logf("gateway log:\n%s", tail(e.logs(), 60))
	}
	if err := e.lab.Close(); err != nil {
		t.Errorf("netlab close: %v", err)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// dial connects from the client namespace through the gateway. It fails
// if the kernel did not route the connection into the TUN (its source
// address is then not the TUN's), so no test can pass by going around the
// gateway.
func (e *env) dial(ctx context.Context, addr string) (*net.TCPConn, error) {
	c, err := e.lab.Client().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if local != tunAddr4 && local != tunAddr6 {
		c.Close()
		return nil, fmt.Errorf("connection to %s left from %s, not through the TUN", addr, local)
	}
	return c.(*net.TCPConn), nil
}

// The TUN's own addresses: a connection routed into the TUN has one of
// them as its source; one that went around the gateway has the veth's.
var (
	tunAddr4 = netip.MustParsePrefix(netlab.TUNPrefix4).Addr()
	tunAddr6 = netip.MustParsePrefix(netlab.TUNPrefix6).Addr()
)

// listen listens in the server namespace and serves each connection with
// handle on its own goroutine until the test ends.
func (e *env) listen(t *testing.T, addr string, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := e.lab.Server().Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// readAllTimeout reads c to EOF or error, bounded by d.
func readAllTimeout(c net.Conn, d time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(c)
}
