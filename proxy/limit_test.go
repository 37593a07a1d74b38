package proxy_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/proxy/proxytest"
)

func TestMaxConnections_ResetsSYNsPastTheLimitUntilAFlowEnds(t *testing.T) {
	h := newHarness(t, proxy.Options{MaxConnections: 2})
	app1, _, done1 := h.establish()
	h.establish()

	ln := listenTCP(t)
	req, done := h.handleTCP(ln.Addr().String())
	waitClosed(t, done, "handler past the limit")
	if d := req.Decision(); !d.Rejected || !d.Reset || d.Calls != 1 {
		t.Fatalf("decision past the limit = %+v, want one Reject(true)", d)
	}
	// TCPAccepted rises just after the app's handshake, which establish
	// already saw.
	giveUp := time.Now().Add(waitLimit)
	for h.p.Stats().TCPAccepted != 2 && time.Now().Before(giveUp) {
		time.Sleep(time.Millisecond)
	}
	if s := h.p.Stats(); s.TCPLimitRejected != 1 || s.TCPOpen != 2 || s.TCPAccepted != 2 {
		t.Fatalf("stats = %+v, want 1 limit rejection with 2 flows open", s)
	}

	// A relay that ends frees its place.
	app1.SetLinger(0)
	app1.Close()
	waitClosed(t, done1, "first relay")
	req, _ = h.handleTCP(ln.Addr().String())
	acceptTCP(t, ln)
	waitClosed(t, req.Decided(), "decision")
	if d := req.Decision(); !d.Accepted {
		t.Fatalf("decision after a flow ended = %+v, want Accept", d)
	}
	if s := h.p.Stats(); s.TCPLimitRejected != 1 || s.TCPOpen != 2 {
		t.Fatalf("stats = %+v, want still 1 rejection, 2 open", s)
	}
}

// records keeps the log records of a test.
type records struct {
	mu  sync.Mutex
	all []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.all = append(r.all, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// warnings returns the warning records and each one's "suppressed" count.
func (r *records) warnings() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, rec := range r.all {
		if rec.Level != slog.LevelWarn {
			continue
		}
		var n int64
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "suppressed" {
				n = a.Value.Int64()
			}
			return true
		})
		out = append(out, n)
	}
	return out
}

func TestDialEMFILE_ResetsCountsAndWarnsAtMostEveryTenSeconds(t *testing.T) {
	clk := clock.NewManual(clock.RealStart)
	logs := &records{}
	emfile := dialFunc(func(context.Context, string, string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	})
	p := proxy.New(proxy.Options{Dialer: emfile, Clock: clk, Logger: slog.New(logs)})
	defer p.Close()
	handle := func() proxytest.Decision {
		req := proxytest.NewRequest(t, flowTo(t, "198.19.0.2:80"))
		p.HandleTCP(context.Background(), req)
		return req.Decision()
	}
	for range 3 {
		if d := handle(); !d.Rejected || !d.Reset {
			t.Fatalf("decision on EMFILE = %+v, want Reject(true)", d)
		}
	}
	if got := logs.warnings(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("warnings after 3 EMFILEs within 10 s: %v, want one", got)
	}
	clk.Advance(10 * time.Second)
	handle()
	if got := logs.warnings(); len(got) != 2 || got[1] != 2 {
		t.Fatalf("warnings after 10 s: %v, want a second one saying 2 were suppressed", got)
	}
	if s := p.Stats(); s.TCPFDExhausted != 4 || s.TCPDialFailed != 4 || s.TCPOpen != 0 {
		t.Fatalf("stats = %+v, want 4 fd-exhausted dial failures and nothing open", s)
	}
}

func TestSetLimits_ALowerLimitRefusesNewFlowsAndKeepsRunningOnes(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app1, up1, _ := h.establish()
	h.establish()
	h.p.SetLimits(proxy.Limits{MaxConnections: 1})
	ln := listenTCP(t)
	req, done := h.handleTCP(ln.Addr().String())
	waitClosed(t, done, "handler past the new limit")
	if d := req.Decision(); !d.Rejected || !d.Reset {
		t.Fatalf("decision past the lowered limit = %+v, want a RST", d)
	}
	transfer(t, app1, up1, "the running flows go on")
	h.p.SetLimits(proxy.Limits{})
	req, _ = h.handleTCP(ln.Addr().String())
	acceptTCP(t, ln)
	waitClosed(t, req.Decided(), "decision")
	if d := req.Decision(); !d.Accepted {
		t.Fatalf("decision with no limit again = %+v, want Accept", d)
	}
}

func TestSetLimits_NewIdleTimeoutAppliesToNewFlowsOnly(t *testing.T) {
	h := newHarness(t, proxy.Options{IdleTimeout: time.Hour})
	old, oldUp, _ := h.establish()
	transfer(t, old, oldUp, "armed")
	h.p.SetLimits(proxy.Limits{IdleTimeout: time.Minute})
	app, up, done := h.establish()
	transfer(t, app, up, "armed")
	h.clock.Advance(2 * time.Minute)
	wantReset(t, app, "new app")
	waitClosed(t, done, "new relay")
	transfer(t, old, oldUp, "the old flow keeps its hour")
}

func TestSetLimits_LowerUDPSessionsEvictsTheLeastRecentlyUsed(t *testing.T) {
	a := mirror(t)
	h := newHarness(t, proxy.Options{UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
	var socks []*net.UDPConn
	var dones []<-chan struct{}
	for i := range 3 {
		src := netip.AddrPortFrom(appAddr.Addr(), uint16(41000+i))
		_, sock, done := h.handleFlow(src, a.LocalAddr().String(), []byte("hi"))
		readDatagram(t, sock)
		socks = append(socks, sock)
		dones = append(dones, done)
		h.clock.Advance(2 * time.Second) // past the LRU granularity
	}
	h.p.SetLimits(proxy.Limits{MaxUDPSessions: 1})
	waitClosed(t, dones[0], "oldest session")
	waitClosed(t, dones[1], "second session")
	assertOpen(t, dones[2], "the newest session")
	if _, err := socks[2].Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	readDatagram(t, socks[2])
	if s := h.p.Stats(); s.UDPEvicted != 2 {
		t.Errorf("UDPEvicted = %d, want 2", s.UDPEvicted)
	}
}
