package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/proxy/proxytest"
	"github.com/tungate/tungate/stack"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait on real I/O so that a broken proxy fails a
// test instead of hanging it.
const waitLimit = 5 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// appAddr labels the app's side of test flows; it is never dialed.
var appAddr = netip.MustParseAddrPort("198.18.0.1:40000")

func flowTo(t testing.TB, dst string) stack.FlowID {
	t.Helper()
	ap, err := netip.ParseAddrPort(dst)
	if err != nil {
		t.Fatal(err)
	}
	return stack.FlowID{Src: appAddr, Dst: ap}
}

// dialFunc adapts a function to proxy.Dialer.
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

func (f dialFunc) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return f(ctx, network, address)
}

// eventLog records a proxy's Events.
type eventLog struct {
	mu     sync.Mutex // guards events
	events []proxy.Event
}

func (l *eventLog) observe(e proxy.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) all() []proxy.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]proxy.Event(nil), l.events...)
}

// has reports whether an event of kind on side was recorded.
func (l *eventLog) has(kind proxy.EventKind, side proxy.Side) bool {
	for _, e := range l.all() {
		if e.Kind == kind && e.Side == side {
			return true
		}
	}
	return false
}

func (l *eventLog) first(kind proxy.EventKind) (proxy.Event, bool) {
	for _, e := range l.all() {
		if e.Kind == kind {
			return e, true
		}
	}
	return proxy.Event{}, false
}

// testClock is the manual clock the proxy runs on in these tests.
type testClock struct{ *clock.Manual }

// WaitForTimers blocks until at least n callbacks are scheduled, so that a
// test advances the clock only after the code under test, on its own
// goroutines, armed its timers. It fails the test after waitLimit.
func (c *testClock) WaitForTimers(t testing.TB, n int) {
	t.Helper()
	giveUp := time.Now().Add(waitLimit)
	for c.Pending() < n {
		if time.Now().After(giveUp) {
			t.Fatalf("%d timers scheduled after %v, want %d", c.Pending(), waitLimit, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// harness is a Proxy on a manual clock whose handler calls are waited
// for when the test ends.
type harness struct {
	t      *testing.T
	p      *proxy.Proxy
	clock  *testClock
	events *eventLog
	wg     sync.WaitGroup
}

// newHarness builds a Proxy from o, filling in a direct dialer, the
// manual clock, the test's logger and an event log.
func newHarness(t *testing.T, o proxy.Options) *harness {
	h := &harness{t: t, clock: &testClock{clock.NewManual(0)}, events: &eventLog{}}
	if o.Dialer == nil {
		o.Dialer = proxy.NewDirect(proxy.DirectOptions{})
	}
	o.Clock = h.clock
	o.Logger = testLogger(t)
	o.Observer = h.events.observe
	h.p = proxy.New(o)
	if goroutineRelays {
		h.p.UseGoroutineRelays()
	}
	t.Cleanup(func() {
		h.p.Close()
		h.wg.Wait()
	})
	return h
}

// handleTCP runs HandleTCP for a new request to dst; done is closed when
// it returns.
func (h *harness) handleTCP(dst string) (req *proxytest.Request, done <-chan struct{}) {
	req = proxytest.NewRequest(h.t, flowTo(h.t, dst))
	return req, h.handleRequest(req)
}

// handleRequest runs HandleTCP for req; done is closed when it has
// returned and the flow's relay, when it runs on events past the return,
// has ended too.
func (h *harness) handleRequest(req *proxytest.Request) (done <-chan struct{}) {
	ch := make(chan struct{})
	h.wg.Go(func() {
		defer close(ch)
		h.p.HandleTCP(context.Background(), req)
		h.p.WaitRelayEnd(req.ID(), waitLimit)
	})
	return ch
}

// goroutineRelays makes newHarness's proxies relay with a goroutine per
// direction instead of by events; bothRelays sets it.
var goroutineRelays bool

// bothRelays runs test once with each relay: by events (the default for
// these tests' kernel-socket Conns and the own engine's) and with a
// goroutine per direction (the gVisor stack's).
func bothRelays(t *testing.T, test func(t *testing.T)) {
	for _, g := range []bool{false, true} {
		name := "evented"
		if g {
			name = "goroutines"
		}
		t.Run(name, func(t *testing.T) {
			goroutineRelays = g
			defer func() { goroutineRelays = false }()
			test(t)
		})
	}
}

// establish runs a flow to a fresh upstream listener and returns the
// app's end, the upstream server's end and the handler's done channel.
func (h *harness) establish() (app, up *net.TCPConn, done <-chan struct{}) {
	t := h.t
	t.Helper()
	ln := listenTCP(t)
	req, done := h.handleTCP(ln.Addr().String())
	up = acceptTCP(t, ln)
	waitClosed(t, req.Decided(), "decision")
	if d := req.Decision(); !d.Accepted || d.Calls != 1 {
		t.Fatalf("decision = %+v, want one Accept", d)
	}
	return req.App(), up, done
}

func listenTCP(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func acceptTCP(t testing.TB, ln *net.TCPListener) *net.TCPConn {
	t.Helper()
	ln.SetDeadline(time.Now().Add(waitLimit))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("upstream accept: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedPort returns a loopback address on which nothing listens.
func closedPort(t testing.TB) string {
	t.Helper()
	ln := listenTCP(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func waitClosed(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func assertOpen(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s happened too early", what)
	default:
	}
}

// transfer writes msg on from and reads it on to.
func transfer(t testing.TB, from, to net.Conn, msg string) {
	t.Helper()
	from.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := io.WriteString(from, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	to.SetReadDeadline(time.Now().Add(waitLimit))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil {
		t.Fatalf("read %q: %v", msg, err)
	}
	if !bytes.Equal(got, []byte(msg)) {
		t.Fatalf("read %q, want %q", got, msg)
	}
}

// readErr reads c until an error and returns it.
func readErr(t testing.TB, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		return io.EOF
	}
	return err
}

func wantReset(t testing.TB, c net.Conn, who string) {
	t.Helper()
	if err := readErr(t, c); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("%s read: %v, want ECONNRESET", who, err)
	}
}

func wantEOF(t testing.TB, c net.Conn, who string) {
	t.Helper()
	if err := readErr(t, c); err != io.EOF {
		t.Fatalf("%s read: %v, want EOF", who, err)
	}
}

// wantWriteFails writes to c until the kernel reports the peer's reset.
func wantWriteFails(t testing.TB, c net.Conn, who string) {
	t.Helper()
	giveUp := time.Now().Add(waitLimit)
	for time.Now().Before(giveUp) {
		c.SetWriteDeadline(giveUp)
		if _, err := c.Write([]byte{0}); err != nil {
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Fatalf("%s write: %v, want ECONNRESET or EPIPE", who, err)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s writes still succeed", who)
}
