package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/proxy/proxytest"
	"github.com/tungate/tungate/stack/stacktest"
)

// sendAndHash writes n random bytes to w, half-closes it and returns
// their hash; it reports errors on errc.
func sendAndHash(w *net.TCPConn, n int64, errc chan<- error) [32]byte {
	h := sha256.New()
	_, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rand.Reader, n))
	if err == nil {
		err = w.CloseWrite()
	}
	errc <- err
	return [32]byte(h.Sum(nil))
}

// readAndHash reads r to EOF and returns the hash and byte count.
func readAndHash(r net.Conn) ([32]byte, int64, error) {
	h := sha256.New()
	r.SetReadDeadline(time.Now().Add(waitLimit))
	n, err := io.Copy(h, r)
	return [32]byte(h.Sum(nil)), n, err
}

func TestRelay_CopiesMegabytesBothWaysIntact(t *testing.T) {
	bothRelays(t, testRelay_CopiesMegabytesBothWaysIntact)
}

func testRelay_CopiesMegabytesBothWaysIntact(t *testing.T) {
	const size = 4 << 20
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	var sentUp, sentDown, gotUp, gotDown [32]byte
	var nUp, nDown int64
	wg.Go(func() { sentUp = sendAndHash(app, size, errc) })
	wg.Go(func() { sentDown = sendAndHash(up, size, errc) })
	wg.Go(func() {
		var err error
		gotUp, nUp, err = readAndHash(up)
		errc <- err
	})
	wg.Go(func() {
		var err error
		gotDown, nDown, err = readAndHash(app)
		errc <- err
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	if nUp != size || gotUp != sentUp {
		t.Errorf("upstream received %d bytes, hash match %v; want %d identical bytes", nUp, gotUp == sentUp, size)
	}
	if nDown != size || gotDown != sentDown {
		t.Errorf("app received %d bytes, hash match %v; want %d identical bytes", nDown, gotDown == sentDown, size)
	}
	waitClosed(t, done, "relay end after both FINs")
	s := h.p.Stats()
	if s.BytesUp != size || s.BytesDown != size || s.TCPActive != 0 {
		t.Errorf("stats = %+v, want %d bytes each way and no active relay", s, size)
	}
	if h.events.has(proxy.EventAbort, proxy.SideApp) || h.events.has(proxy.EventAbort, proxy.SideUpstream) {
		t.Errorf("a graceful close aborted a side: %v", h.events.all())
	}
	if e, ok := h.events.first(proxy.EventClose); !ok || e.Up != size || e.Down != size {
		t.Errorf("close event = %+v, want Up and Down %d", e, size)
	}
}

func TestRelay_AppFINHalfClosesUpstreamWhileDownstreamFlows(t *testing.T) {
	bothRelays(t, testRelay_AppFINHalfClosesUpstreamWhileDownstreamFlows)
}

func testRelay_AppFINHalfClosesUpstreamWhileDownstreamFlows(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()
	transfer(t, app, up, "request")
	if err := app.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, up, "upstream")
	transfer(t, up, app, "response after the app's FIN")
	transfer(t, up, app, "and more")
	assertOpen(t, done, "relay end while the upstream still sends")
	if err := up.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, app, "app")
	waitClosed(t, done, "relay end")
	for _, want := range []struct {
		kind proxy.EventKind
		side proxy.Side
	}{
		{proxy.EventEOF, proxy.SideApp},
		{proxy.EventCloseWrite, proxy.SideUpstream},
		{proxy.EventEOF, proxy.SideUpstream},
		{proxy.EventCloseWrite, proxy.SideApp},
	} {
		if !h.events.has(want.kind, want.side) {
			t.Errorf("no %v event for the %v side", want.kind, want.side)
		}
	}
	if h.events.has(proxy.EventAbort, proxy.SideApp) || h.events.has(proxy.EventAbort, proxy.SideUpstream) {
		t.Errorf("half-close aborted a side: %v", h.events.all())
	}
}

func TestRelay_UpstreamFINHalfClosesAppWhileUpstreamFlowContinues(t *testing.T) {
	bothRelays(t, testRelay_UpstreamFINHalfClosesAppWhileUpstreamFlowContinues)
}

func testRelay_UpstreamFINHalfClosesAppWhileUpstreamFlowContinues(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()
	if err := up.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, app, "app")
	transfer(t, app, up, "upload after the upstream's FIN")
	assertOpen(t, done, "relay end while the app still sends")
	if err := app.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, up, "upstream")
	waitClosed(t, done, "relay end")
	if s := h.p.Stats(); s.ResetsFromApp+s.ResetsFromUpstream+s.IdleTimeouts+s.HalfCloseTimeouts != 0 {
		t.Errorf("stats = %+v, want a clean close", s)
	}
}

// reset closes c with a RST.
func reset(t testing.TB, c *net.TCPConn) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestRelay_UpstreamResetAbortsApp(t *testing.T) { bothRelays(t, testRelay_UpstreamResetAbortsApp) }

func testRelay_UpstreamResetAbortsApp(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()
	transfer(t, up, app, "some data first")
	reset(t, up)
	wantReset(t, app, "app")
	waitClosed(t, done, "relay end")
	if s := h.p.Stats(); s.ResetsFromUpstream != 1 || s.ResetsFromApp != 0 {
		t.Errorf("stats = %+v, want one reset from upstream", s)
	}
	if !h.events.has(proxy.EventReset, proxy.SideUpstream) || !h.events.has(proxy.EventAbort, proxy.SideApp) {
		t.Errorf("events %v, want upstream reset and app abort", h.events.all())
	}
}

func TestRelay_AppResetAbortsUpstream(t *testing.T) { bothRelays(t, testRelay_AppResetAbortsUpstream) }

func testRelay_AppResetAbortsUpstream(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()
	transfer(t, app, up, "some data first")
	reset(t, app)
	wantReset(t, up, "upstream")
	waitClosed(t, done, "relay end")
	if s := h.p.Stats(); s.ResetsFromApp != 1 || s.ResetsFromUpstream != 0 {
		t.Errorf("stats = %+v, want one reset from the app", s)
	}
}

func TestRelay_ResetAfterHalfCloseStillAbortsOtherSide(t *testing.T) {
	bothRelays(t, testRelay_ResetAfterHalfCloseStillAbortsOtherSide)
}

func testRelay_ResetAfterHalfCloseStillAbortsOtherSide(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()
	if err := app.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, up, "upstream")
	reset(t, up)
	wantReset(t, app, "app")
	waitClosed(t, done, "relay end")
}

func TestRelay_IdleTimeoutAbortsBothSides(t *testing.T) {
	bothRelays(t, testRelay_IdleTimeoutAbortsBothSides)
}

func testRelay_IdleTimeoutAbortsBothSides(t *testing.T) {
	const idle = time.Minute
	h := newHarness(t, proxy.Options{IdleTimeout: idle})
	app, up, done := h.establish()
	transfer(t, app, up, "ping") // the relay runs, so its timer is armed

	h.clock.Advance(idle - time.Second)
	transfer(t, up, app, "activity resets the idle time")
	h.clock.Advance(2 * time.Second) // past the first deadline
	assertOpen(t, done, "idle abort despite recent activity")
	transfer(t, app, up, "still alive")

	h.clock.Advance(idle)
	wantReset(t, app, "app")
	wantReset(t, up, "upstream")
	waitClosed(t, done, "relay end")
	if s := h.p.Stats(); s.IdleTimeouts != 1 || s.HalfCloseTimeouts != 0 {
		t.Errorf("stats = %+v, want one idle timeout", s)
	}
	if e, ok := h.events.first(proxy.EventTimeout); !ok || e.Err == nil {
		t.Errorf("timeout event = %+v, want one with a reason", e)
	}
}

func TestRelay_HalfCloseTimeoutAbortsSilentOpenDirection(t *testing.T) {
	bothRelays(t, testRelay_HalfCloseTimeoutAbortsSilentOpenDirection)
}

func testRelay_HalfCloseTimeoutAbortsSilentOpenDirection(t *testing.T) {
	const half = 10 * time.Second
	h := newHarness(t, proxy.Options{IdleTimeout: time.Hour, HalfCloseTimeout: half})
	app, up, done := h.establish()
	if err := app.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, up, "upstream") // the relay is now half-closed

	h.clock.Advance(half - time.Second)
	transfer(t, up, app, "a download still in progress")
	h.clock.Advance(half - time.Second)
	assertOpen(t, done, "half-close abort while data flows")
	transfer(t, up, app, "keeps it alive")

	h.clock.Advance(half)
	wantReset(t, app, "app")
	waitClosed(t, done, "relay end")
	wantWriteFails(t, up, "upstream")
	if s := h.p.Stats(); s.HalfCloseTimeouts != 1 || s.IdleTimeouts != 0 {
		t.Errorf("stats = %+v, want one half-close timeout", s)
	}
}

func TestRelay_NegativeIdleTimeoutDisablesIt(t *testing.T) {
	bothRelays(t, testRelay_NegativeIdleTimeoutDisablesIt)
}

func testRelay_NegativeIdleTimeoutDisablesIt(t *testing.T) {
	h := newHarness(t, proxy.Options{IdleTimeout: -1})
	app, up, done := h.establish()
	transfer(t, app, up, "ping")
	if n := h.clock.Pending(); n != 0 {
		t.Fatalf("%d timers pending, want none", n)
	}
	h.clock.Advance(24 * time.Hour)
	transfer(t, up, app, "pong")
	assertOpen(t, done, "relay end")
}

func TestClose_AbortsRelaysAndWaitsForThem(t *testing.T) {
	bothRelays(t, testClose_AbortsRelaysAndWaitsForThem)
}

func testClose_AbortsRelaysAndWaitsForThem(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, _ := h.establish()
	transfer(t, app, up, "ping")
	h.p.Close()
	if s := h.p.Stats(); s.TCPActive != 0 {
		t.Fatalf("%d relays active after Close", s.TCPActive)
	}
	wantReset(t, app, "app")
	wantReset(t, up, "upstream")
}

func TestRelay_AppDataQueuedBeforeFINArrivesBeforeEOF(t *testing.T) {
	bothRelays(t, testRelay_AppDataQueuedBeforeFINArrivesBeforeEOF)
}

func testRelay_AppDataQueuedBeforeFINArrivesBeforeEOF(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()
	msg := bytes.Repeat([]byte("x"), 100<<10)
	if _, err := app.Write(msg); err != nil {
		t.Fatal(err)
	}
	app.CloseWrite()
	up.SetReadDeadline(time.Now().Add(waitLimit))
	got, err := io.ReadAll(up)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("upstream read %d bytes, err %v; want all %d then EOF", len(got), err, len(msg))
	}
	up.CloseWrite()
	wantEOF(t, app, "app")
	waitClosed(t, done, "relay end")
}

// trackedConn is an upstream connection that records Close.
type trackedConn struct {
	*net.TCPConn
	closed atomic.Bool
}

// KernelSocket lets the evented relay serve the socket underneath, so
// the test sees that relay close through the Conn.
func (c *trackedConn) KernelSocket() *net.TCPConn { return c.TCPConn }

func (c *trackedConn) Close() error {
	c.closed.Store(true)
	return c.TCPConn.Close()
}

func TestRelay_ClosesBothConnectionsAfterBothFINs(t *testing.T) {
	bothRelays(t, testRelay_ClosesBothConnectionsAfterBothFINs)
}

func testRelay_ClosesBothConnectionsAfterBothFINs(t *testing.T) {
	direct := proxy.NewDirect(proxy.DirectOptions{})
	upstreams := make(chan *trackedConn, 1)
	h := newHarness(t, proxy.Options{Dialer: dialFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := direct.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{TCPConn: c.(*net.TCPConn)}
		upstreams <- tc
		return tc, nil
	})})
	ln := listenTCP(t)
	req, done := h.handleTCP(ln.Addr().String())
	up := acceptTCP(t, ln)
	waitClosed(t, req.Decided(), "decision")
	app := req.App()
	app.CloseWrite()
	wantEOF(t, up, "upstream")
	up.CloseWrite()
	wantEOF(t, app, "app")
	waitClosed(t, done, "relay end")
	if c := req.Conn(); !c.Closed() || c.Aborted() {
		t.Errorf("app conn closed %v, aborted %v; want a graceful Close", c.Closed(), c.Aborted())
	}
	if !(<-upstreams).closed.Load() {
		t.Error("upstream conn not closed")
	}
}

func TestRelay_HoldsNoLargeBufferWhileItsReadsWait(t *testing.T) {
	bothRelays(t, testRelay_HoldsNoLargeBufferWhileItsReadsWait)
}

func testRelay_HoldsNoLargeBufferWhileItsReadsWait(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, _ := h.establish()
	transfer(t, app, up, "x")
	transfer(t, up, app, "y")
	// The evented relay reads with a large buffer while it runs, and
	// gives it back when its sources have nothing more.
	stacktest.Eventually(t, "no large buffer held after a one-byte exchange", func() bool { return h.p.Stats().TCPLargeBuffers == 0 })
	// A burst takes one and gives it back once the source is drained.
	burst := bytes.Repeat([]byte("z"), 200<<10)
	go up.Write(burst)
	app.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(app, make([]byte, len(burst))); err != nil {
		t.Fatal(err)
	}
	stacktest.Eventually(t, "the burst's buffer to be given back", func() bool { return h.p.Stats().TCPLargeBuffers == 0 })
}

func TestRelay_EventedHoldsNoGoroutineWhileIdle(t *testing.T) {
	const flows = 50
	h := newHarness(t, proxy.Options{})
	ln := listenTCP(t)
	base := runtime.NumGoroutine()
	apps := make([]*net.TCPConn, 0, flows)
	ups := make([]*net.TCPConn, 0, flows)
	for i := range flows {
		id := flowTo(t, ln.Addr().String())
		id.Src = netip.AddrPortFrom(id.Src.Addr(), id.Src.Port()+uint16(i))
		req := proxytest.NewRequest(t, id)
		// HandleTCP returns once the relay runs on events; a relay on
		// goroutines would keep it until the flow ends.
		h.p.HandleTCP(context.Background(), req)
		up := acceptTCP(t, ln)
		app := req.App()
		transfer(t, app, up, "ping")
		transfer(t, up, app, "pong")
		apps, ups = append(apps, app), append(ups, up)
	}
	if s := h.p.Stats(); s.TCPEvented != flows || s.TCPActive != flows {
		t.Fatalf("evented %d, active %d; want %d of each", s.TCPEvented, s.TCPActive, flows)
	}
	stacktest.Eventually(t, "idle relays to hold no goroutine", func() bool { return runtime.NumGoroutine() < base+10 })
	for i := range apps {
		apps[i].CloseWrite()
		wantEOF(t, ups[i], "upstream")
		ups[i].CloseWrite()
		wantEOF(t, apps[i], "app")
	}
	stacktest.Eventually(t, "every relay to end", func() bool {
		s := h.p.Stats()
		return s.TCPActive == 0 && s.TCPEvented == 0 && s.TCPOpen == 0
	})
}

func TestRelay_ResumesWhenAFullUpstreamDrains(t *testing.T) {
	bothRelays(t, testRelay_ResumesWhenAFullUpstreamDrains)
}

// The upstream reads nothing until the app has sent far more than the
// sockets buffer: the relay's writes find the socket full, and the
// transfer must resume, intact, once the upstream reads.
func testRelay_ResumesWhenAFullUpstreamDrains(t *testing.T) {
	const size = 16 << 20
	h := newHarness(t, proxy.Options{})
	app, up, _ := h.establish()
	up.SetReadBuffer(64 << 10)
	errc := make(chan error, 1)
	var sent [32]byte
	done := make(chan struct{})
	go func() { sent = sendAndHash(app, size, errc); close(done) }()
	time.Sleep(100 * time.Millisecond) // let the buffers fill
	got, n, err := readAndHash(up)
	if err != nil || n != size {
		t.Fatalf("upstream read %d bytes, %v", n, err)
	}
	<-done
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got != sent {
		t.Fatal("data changed on the way")
	}
}

// An evented relay reads a socket again only once the poller says there
// is something new, right after data (for a FIN queued behind it) and
// right after writing to it (for the reply): a request/response exchange
// costs each message about three reads, not a read per pass over both
// directions.
func TestRelay_EventedReadsAnEmptySocketOnce(t *testing.T) {
	const exchanges = 50
	h := newHarness(t, proxy.Options{})
	reads := proxy.CountSocketReads(t)
	app, up, _ := h.establish()
	transfer(t, app, up, "warm")
	transfer(t, up, app, "warm")
	stacktest.Eventually(t, "the relay to go idle", h.p.RelaysIdle)
	before := reads.Load()
	for range exchanges {
		transfer(t, app, up, "ping")
		transfer(t, up, app, "pong")
	}
	stacktest.Eventually(t, "the relay to go idle", h.p.RelaysIdle)
	// Each message: a read that gets it, one that finds its socket
	// empty, and one of the other socket after writing the message
	// there; one more each for timing's sake (a relay on goroutines, or
	// one reading every socket on every pass, takes six).
	got, least, most := reads.Load()-before, int64(exchanges*2), int64(exchanges*2*4)
	switch {
	case got < least:
		t.Errorf("%d socket reads for %d exchanges: the messages did not go through the evented relay's sockets", got, exchanges)
	case got > most:
		t.Errorf("%d socket reads for %d exchanges, want at most %d", got, exchanges, most)
	default:
		t.Logf("%d socket reads for %d exchanges", got, exchanges)
	}
}
