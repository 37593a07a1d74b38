package proxy_test

import (
	"context"
	"errors"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/proxy/proxytest"
	"github.com/tungate/tungate/stack"
)

func TestHandleTCP_AnswersSYNOnlyAfterUpstreamConnected(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	direct := proxy.NewDirect(proxy.DirectOptions{})
	gate := dialFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		close(entered)
		<-release
		return direct.DialContext(ctx, network, address)
	})
	h := newHarness(t, proxy.Options{Dialer: gate})
	ln := listenTCP(t)
	req, _ := h.handleTCP(ln.Addr().String())

	waitClosed(t, entered, "dial")
	assertOpen(t, req.Decided(), "answering the SYN while the dial is pending")
	close(release)
	up := acceptTCP(t, ln)
	waitClosed(t, req.Decided(), "decision")
	if d := req.Decision(); !d.Accepted || d.Rejected || d.Calls != 1 {
		t.Fatalf("decision = %+v, want exactly one Accept", d)
	}
	transfer(t, req.App(), up, "hello")
	var kinds []proxy.EventKind
	for _, e := range h.events.all()[:4] {
		kinds = append(kinds, e.Kind)
	}
	want := []proxy.EventKind{proxy.EventRoute, proxy.EventDialStart, proxy.EventDialDone, proxy.EventAccept}
	if !slices.Equal(kinds, want) {
		t.Fatalf("first events = %v, want %v", kinds, want)
	}
	if got := h.p.Stats(); got.TCPAccepted != 1 || got.TCPActive != 1 {
		t.Fatalf("stats = %+v, want 1 accepted and active", got)
	}
}

func TestHandleTCP_RefusedUpstreamResetsApp(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	req, done := h.handleTCP(closedPort(t))
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset || d.Calls != 1 {
		t.Fatalf("decision = %+v, want exactly one Reject(true)", d)
	}
	e, ok := h.events.first(proxy.EventReject)
	if !ok || !errors.Is(e.Err, syscall.ECONNREFUSED) {
		t.Fatalf("reject event = %+v, want an ECONNREFUSED reason", e)
	}
	if s := h.p.Stats(); s.TCPRefused != 1 || s.TCPAccepted != 0 || s.TCPTimedOut != 0 || s.TCPDialFailed != 0 {
		t.Fatalf("stats = %+v, want exactly one refusal", s)
	}
}

// hangingDialer blocks until its ctx is done.
func hangingDialer(entered chan<- struct{}) proxy.Dialer {
	return dialFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		close(entered)
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

func TestHandleTCP_DialTimeoutResetsAppAfterConnectTimeout(t *testing.T) {
	entered := make(chan struct{})
	h := newHarness(t, proxy.Options{Dialer: hangingDialer(entered), ConnectTimeout: 3 * time.Second})
	req, done := h.handleTCP("127.0.0.1:9")
	waitClosed(t, entered, "dial")

	h.clock.Advance(3*time.Second - time.Millisecond)
	if h.clock.Pending() != 1 {
		t.Fatalf("connect timer gone %v before the timeout", time.Millisecond)
	}
	assertOpen(t, req.Decided(), "answering before the connect timeout")
	h.clock.Advance(time.Millisecond)
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset || d.Calls != 1 {
		t.Fatalf("decision = %+v, want exactly one Reject(true)", d)
	}
	e, _ := h.events.first(proxy.EventReject)
	if !errors.Is(e.Err, os.ErrDeadlineExceeded) || !errors.Is(e.Err, context.DeadlineExceeded) {
		t.Fatalf("reject reason %v, want a deadline error", e.Err)
	}
	if s := h.p.Stats(); s.TCPTimedOut != 1 || s.TCPRefused != 0 {
		t.Fatalf("stats = %+v, want exactly one timeout", s)
	}
}

func TestHandleTCP_PolicyRefusalResetsWithoutDialing(t *testing.T) {
	var dials atomic.Int32
	denied := errors.New("port 25 is blocked")
	h := newHarness(t, proxy.Options{
		Dialer: dialFunc(func(context.Context, string, string) (net.Conn, error) {
			dials.Add(1)
			return nil, errors.New("must not dial")
		}),
		Policy: func(id stack.FlowID) error {
			if id.Dst.Port() == 25 {
				return denied
			}
			return nil
		},
	})
	req, done := h.handleTCP("127.0.0.1:25")
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset {
		t.Fatalf("decision = %+v, want Reject(true)", d)
	}
	if e, _ := h.events.first(proxy.EventReject); !errors.Is(e.Err, denied) {
		t.Fatalf("reject reason %v, want the policy's error", e.Err)
	}
	if dials.Load() != 0 {
		t.Fatalf("dialed %d times", dials.Load())
	}
	if s := h.p.Stats(); s.TCPPolicyRejected != 1 {
		t.Fatalf("stats = %+v, want one policy rejection", s)
	}
}

func TestHandleTCP_AppGoneBeforeAcceptAbortsUpstream(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	ln := listenTCP(t)
	req := proxytest.NewRequest(t, flowTo(t, ln.Addr().String()))
	req.FailAccept(syscall.ECONNRESET)
	done := h.handleRequest(req)
	up := acceptTCP(t, ln)
	waitClosed(t, done, "handler")
	wantReset(t, up, "upstream")
	if s := h.p.Stats(); s.TCPAcceptFailed != 1 || s.TCPAccepted != 0 {
		t.Fatalf("stats = %+v, want one failed accept", s)
	}
}

func TestHandleTCP_AfterCloseRejectsWithReset(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	h.p.Close()
	req, done := h.handleTCP("127.0.0.1:9")
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset {
		t.Fatalf("decision = %+v, want Reject(true)", d)
	}
}

func TestClose_FailsPendingDialWithReset(t *testing.T) {
	entered := make(chan struct{})
	h := newHarness(t, proxy.Options{Dialer: hangingDialer(entered)})
	req, _ := h.handleTCP("127.0.0.1:9")
	waitClosed(t, entered, "dial")
	h.p.Close()
	// Close waits for the handler, which decides before it returns.
	if d := req.Decision(); !d.Rejected || !d.Reset {
		t.Fatalf("decision after Close = %+v, want Reject(true)", d)
	}
}
