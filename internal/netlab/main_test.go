package netlab

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// testPrefix names the namespaces of this package's tests.
const testPrefix = "nlt"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func skipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestLab builds a Lab that is closed when the test ends.
func newTestLab(t testing.TB) *Lab {
	t.Helper()
	return newTestLabOpts(t, Options{Name: testPrefix})
}

func newTestLabOpts(t testing.TB, opts Options) *Lab {
	t.Helper()
	skipUnlessRoot(t)
	opts.Logger = testLogger(t)
	l, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// uniquePrefix returns base plus random letters, for tests that inspect
// every namespace with their prefix (copies of this test binary may run at
// the same time).
func uniquePrefix(t testing.TB, base string) string {
	t.Helper()
	id, err := randomID()
	if err != nil {
		t.Fatal(err)
	}
	// Letters only, so that the prefix never looks like another prefix plus
	// a lab id.
	return base + strings.Map(func(r rune) rune { return 'g' + (r % 16) }, id)
}

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsRunDir, name))
	return err == nil
}

// namesWithPrefix lists entries of dir that start with prefix.
func namesWithPrefix(t testing.TB, dir, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// serveEcho accepts connections on ln and echoes each until the peer
// closes it. When the test ends it closes the listener and the open
// connections and waits for all of its goroutines.
func serveEcho(t testing.TB, ln net.Listener) {
	t.Helper()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex // guards conns and closed
		conns  = map[net.Conn]bool{}
		closed bool
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if !closed {
			conns[c] = true
		}
		return !closed
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		delete(conns, c)
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				c.Close()
				return
			}
			wg.Go(func() {
				io.Copy(c, c)
				c.Close()
				untrack(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// listenEcho starts a TCP echo server in S on addr with a free port.
func listenEcho(t testing.TB, l *Lab, ip string) string {
	t.Helper()
	ln, err := l.Server().Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, ln)
	return ln.Addr().String()
}

// assertEcho writes a message on c and expects it back.
func assertEcho(t testing.TB, c net.Conn) {
	t.Helper()
	msg := []byte("ping through the lab")
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != string(msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}
