package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/tungate/tungate/stack"
)

// HandleTCP implements stack.Handler. It asks the policy, dials
// req.ID().Dst upstream within ConnectTimeout and only then answers the
// app's SYN: Accept when the upstream connected, Reject(true) — a RST,
// so the app's connect fails with ECONNREFUSED — when the policy refused,
// the upstream refused, the dial timed out or failed otherwise. When the
// app is gone by the time Accept runs, the upstream connection is
// aborted. An accepted flow is relayed until both directions have
// finished, a side resets, a timeout expires, ctx is done or the proxy
// closes. HandleTCP returns after both connections are closed, except
// where the relay runs on events (see evrelay.go): it then returns at
// once, and the relay ends on its own; Close waits for it.
func (p *Proxy) HandleTCP(ctx context.Context, req stack.Request) {
	id := req.ID()
	ctx, end, ok := p.begin(ctx)
	if !ok {
		p.stats.tcpDialFailed.Add(1)
		p.reject(req, id, fmt.Errorf("proxy: %w", net.ErrClosed))
		return
	}
	defer end()
	if !p.admit() {
		p.stats.tcpLimitRejected.Add(1)
		p.limitWarn.warn(p.log, "proxy: connection limit reached, new connections get a RST",
			"max_connections", p.limits().maxConns, "flow", id)
		p.reject(req, id, fmt.Errorf("proxy: %d connections in progress (proxy.max_connections)", p.limits().maxConns))
		return
	}
	detached := false // the relay took over the flow's place (startEvented)
	defer func() {
		if !detached {
			p.release()
		}
	}()
	if p.policy != nil {
		if err := p.policy(id); err != nil {
			p.stats.tcpPolicyRejected.Add(1)
			p.reject(req, id, fmt.Errorf("proxy: policy: %w", err))
			return
		}
	}
	rt := p.route(id, "tcp")
	if rt.Sniff != nil {
		detached = p.handleSniffed(ctx, req, id, rt)
		return
	}
	cid := p.conns.newID()
	p.emit(Event{Flow: id, Kind: EventRoute, Route: rt, Conn: cid})
	switch rt.Action {
	case ActionReject:
		p.stats.tcpRouteRejected.Add(1)
		p.reject(req, id, fmt.Errorf("proxy: %v: reject", rt))
		return
	case ActionDrop:
		p.stats.tcpRouteDropped.Add(1)
		p.log.Debug("tcp dropped", "flow", id, "route", rt.String())
		req.Reject(false)
		return
	}
	up, err := p.dialTCP(ctx, id, rt)
	if err != nil {
		p.countDialFailure(err)
		p.reject(req, id, err)
		return
	}
	conn, err := p.accept(ctx, req, id)
	if err != nil {
		p.stats.tcpAcceptFailed.Add(1)
		p.log.Debug("tcp accept failed", "flow", id, "err", err)
		p.abort(id, SideUpstream, up)
		return
	}
	p.stats.tcpAccepted.Add(1)
	detached = p.relay(ctx, p.newEntry(cid, "tcp", id, rt, conn, nil), conn, up)
}

// dialTCP connects upstream to id.Dst through rt within the connect
// timeout.
func (p *Proxy) dialTCP(ctx context.Context, id stack.FlowID, rt Route) (net.Conn, error) {
	limit := p.connectTimeoutOf(rt)
	timeout := timeoutAfter("connect timeout", limit)
	dctx, release := p.withTimeout(ctx, limit, timeout)
	defer release()
	p.emit(Event{Flow: id, Kind: EventDialStart})
	start := p.clock.Now()
	up, err := rt.Dialer.DialContext(dctx, "tcp", rt.target(id))
	if err != nil {
		if context.Cause(dctx) == timeout && !errors.Is(err, timeout) {
			// The dialer reported the cancellation in its own words;
			// say that it was the timeout.
			err = fmt.Errorf("%w: %w", timeout, err)
		}
		err = fmt.Errorf("proxy: dial %s via %s: %w", rt.target(id), rt.Outbound, err)
	}
	p.emit(Event{Flow: id, Kind: EventDialDone, Err: err, Route: rt, Elapsed: p.clock.Now().Sub(start)})
	return up, err
}

func (p *Proxy) countDialFailure(err error) {
	if isFDExhausted(err) {
		p.stats.tcpFDExhausted.Add(1)
		p.fdWarn.warn(p.log, "proxy: out of file descriptors, new connections get a RST; lower proxy.max_connections or raise the open-file limit (LimitNOFILE)",
			"err", err, "open", p.stats.tcpOpen.Load())
	}
	switch classify(err) {
	case failRefused:
		p.stats.tcpRefused.Add(1)
	case failTimeout:
		p.stats.tcpTimedOut.Add(1)
	default:
		p.stats.tcpDialFailed.Add(1)
	}
}

// accept completes the app's handshake within the connect timeout.
func (p *Proxy) accept(ctx context.Context, req stack.Request, id stack.FlowID) (stack.Conn, error) {
	limit := p.limits().connectTimeout
	timeout := timeoutAfter("app handshake timeout", limit)
	actx, release := p.withTimeout(ctx, limit, timeout)
	defer release()
	conn, err := req.Accept(actx)
	if err != nil {
		err = fmt.Errorf("proxy: accept: %w", err)
	}
	p.emit(Event{Flow: id, Kind: EventAccept, Err: err})
	return conn, err
}

func (p *Proxy) reject(req stack.Request, id stack.FlowID, err error) {
	p.log.Debug("tcp rejected", "flow", id, "err", err)
	req.Reject(true)
	p.emit(Event{Flow: id, Kind: EventReject, Err: err})
}

// abort resets c: a RST to its peer, unsent data discarded. stack.Conn
// has Abort; a kernel socket gets SO_LINGER 0 before Close.
func (p *Proxy) abort(id stack.FlowID, side Side, c net.Conn) {
	switch a := c.(type) {
	case interface{ Abort() error }:
		a.Abort()
	case interface{ SetLinger(int) error }:
		a.SetLinger(0)
		c.Close()
	default:
		c.Close()
	}
	p.emit(Event{Flow: id, Kind: EventAbort, Side: side})
}
