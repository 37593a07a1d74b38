package proxy_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/proxy/proxytest"
	"github.com/tungate/tungate/stack"
)

// countingDialer dials directly and counts its dials.
type countingDialer struct {
	n atomic.Int32
	d proxy.Dialer
}

func (c *countingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c.n.Add(1)
	return c.d.DialContext(ctx, network, address)
}

func TestRouter_ChoosesTheDialerPerFlow(t *testing.T) {
	def := &countingDialer{d: proxy.NewDirect(proxy.DirectOptions{})}
	chosen := &countingDialer{d: proxy.NewDirect(proxy.DirectOptions{})}
	h := newHarness(t, proxy.Options{
		Dialer: def,
		Router: func(id stack.FlowID, network string) proxy.Route {
			return proxy.Route{Outbound: "chosen", Rule: 3, Dialer: chosen}
		},
	})
	ln := listenTCP(t)
	req, _ := h.handleTCP(ln.Addr().String())
	up := acceptTCP(t, ln)
	defer up.Close()
	waitClosed(t, req.Decided(), "decision")
	if !req.Decision().Accepted {
		t.Fatalf("decision %+v", req.Decision())
	}
	if chosen.n.Load() != 1 || def.n.Load() != 0 {
		t.Errorf("dials: chosen %d, default %d; want 1, 0", chosen.n.Load(), def.n.Load())
	}
	ev, ok := h.events.first(proxy.EventRoute)
	if !ok || ev.Route.Outbound != "chosen" || ev.Route.Rule != 3 || ev.Route.String() != "outbound chosen (rule 3)" {
		t.Errorf("route event %+v (found %v)", ev.Route, ok)
	}
}

func TestRouter_RejectIsARSTWithoutDialing(t *testing.T) {
	dialer := &countingDialer{d: proxy.NewDirect(proxy.DirectOptions{})}
	h := newHarness(t, proxy.Options{
		Dialer: dialer,
		Router: func(stack.FlowID, string) proxy.Route {
			return proxy.Route{Outbound: "reject", Rule: 0, Action: proxy.ActionReject}
		},
	})
	req, done := h.handleTCP(listenTCP(t).Addr().String())
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset || d.Calls != 1 {
		t.Errorf("decision %+v, want one Reject with a RST", d)
	}
	if s := h.p.Stats(); s.TCPRouteRejected != 1 || dialer.n.Load() != 0 {
		t.Errorf("stats %+v, dials %d; want one route rejection and no dial", s, dialer.n.Load())
	}
}

func TestRouter_DropAnswersNothing(t *testing.T) {
	h := newHarness(t, proxy.Options{
		Router: func(stack.FlowID, string) proxy.Route {
			return proxy.Route{Outbound: "drop", Rule: -1, Action: proxy.ActionDrop}
		},
	})
	req, done := h.handleTCP(listenTCP(t).Addr().String())
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || d.Reset || d.Calls != 1 {
		t.Errorf("decision %+v, want one Reject without a RST", d)
	}
	if s := h.p.Stats(); s.TCPRouteDropped != 1 {
		t.Errorf("stats %+v, want one dropped", s)
	}
}

func TestRouter_UDPRejectRefusesAndDropDrops(t *testing.T) {
	srv := serveUDP(t, echo)
	for _, action := range []proxy.Action{proxy.ActionReject, proxy.ActionDrop} {
		h := newHarness(t, proxy.Options{
			Router: func(stack.FlowID, string) proxy.Route { return proxy.Route{Outbound: "x", Rule: 1, Action: action} },
		})
		st, app := proxytest.NewPacketConnPair(t, flowTo(t, srv.LocalAddr().String()))
		if _, err := app.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
		h.p.HandleUDP(context.Background(), st)
		s := h.p.Stats()
		if s.UDPDropped != 1 || s.UDPSessions != 0 {
			t.Errorf("action %d: stats %+v, want one dropped flow", action, s)
		}
		if want := action == proxy.ActionReject; st.Refused() != want || (s.UDPRefused == 1) != want {
			t.Errorf("action %d: refused %v (stats %d), want %v", action, st.Refused(), s.UDPRefused, want)
		}
	}
}

func TestRouter_UDPGoesThroughTheRoutesDialer(t *testing.T) {
	srv := serveUDP(t, echo)
	dialer := &countingDialer{d: proxy.NewDirect(proxy.DirectOptions{})}
	var network string
	h := newHarness(t, proxy.Options{
		Router: func(_ stack.FlowID, n string) proxy.Route {
			network = n
			return proxy.Route{Outbound: "u", Rule: -1, Dialer: dialer}
		},
	})
	app, _ := h.handleUDP(srv.LocalAddr().String(), []byte("ping"))
	if got := readDatagram(t, app); string(got) != "ping" {
		t.Fatalf("echo %q", got)
	}
	if dialer.n.Load() != 1 || network != "udp" {
		t.Errorf("dials %d for network %q; want 1 for udp", dialer.n.Load(), network)
	}
}

func TestRouter_OutboundConnectTimeoutEndsTheDial(t *testing.T) {
	entered := make(chan struct{})
	hang := dialFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		close(entered)
		<-ctx.Done()
		return nil, context.Cause(ctx)
	})
	h := newHarness(t, proxy.Options{
		ConnectTimeout: time.Minute,
		Router: func(stack.FlowID, string) proxy.Route {
			return proxy.Route{Outbound: "slow", Rule: 0, Dialer: hang, ConnectTimeout: 3 * time.Second}
		},
	})
	req, done := h.handleTCP("198.19.0.4:80")
	waitClosed(t, entered, "dial")
	h.clock.WaitForTimers(t, 1)
	h.clock.Advance(2 * time.Second)
	assertOpen(t, done, "the handler before the outbound's timeout")
	h.clock.Advance(time.Second)
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset {
		t.Errorf("decision %+v, want a RST", d)
	}
	ev, _ := h.events.first(proxy.EventDialDone)
	if !errors.Is(ev.Err, os.ErrDeadlineExceeded) || !strings.Contains(ev.Err.Error(), "connect timeout after 3s") {
		t.Errorf("dial error %v, want the outbound's 3s timeout", ev.Err)
	}
	if ev.Elapsed != 3*time.Second || ev.Route.Outbound == "" {
		t.Errorf("dial-done elapsed %v route %q, want 3s on the manual clock and the outbound", ev.Elapsed, ev.Route.Outbound)
	}
	if s := h.p.Stats(); s.TCPTimedOut != 1 {
		t.Errorf("stats %+v, want one timeout", s)
	}
}

func TestRouter_AddressReplacesTheDestination(t *testing.T) {
	ln := listenTCP(t)
	var got string
	d := dialFunc(func(ctx context.Context, network, address string) (net.Conn, error) {
		got = address
		return proxy.NewDirect(proxy.DirectOptions{}).DialContext(ctx, network, ln.Addr().String())
	})
	h := newHarness(t, proxy.Options{
		Router: func(stack.FlowID, string) proxy.Route {
			return proxy.Route{Outbound: "p", Rule: 0, Dialer: d, Address: "www.example.test:443"}
		},
	})
	req, _ := h.handleTCP("198.18.200.9:443")
	up := acceptTCP(t, ln)
	defer up.Close()
	waitClosed(t, req.Decided(), "decision")
	if got != "www.example.test:443" {
		t.Errorf("dialed %q, want the route's address", got)
	}
	ev, _ := h.events.first(proxy.EventRoute)
	if s := ev.Route.String(); s != "outbound p (rule 0) to www.example.test:443" {
		t.Errorf("route event %q", s)
	}
}
