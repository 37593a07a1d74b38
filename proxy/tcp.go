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
// closes; HandleTCP returns after both connections are closed.
func (p *Proxy) HandleTCP(ctx context.Context, req stack.Request) {
	id := req.ID()
	ctx, end, ok := p.begin(ctx)
	if !ok {
		p.stats.tcpDialFailed.Add(1)
		p.reject(req, id, fmt.Errorf("proxy: %w", net.ErrClosed))
		return
	}
	defer end()
	if p.policy != nil {
		if err := p.policy(id); err != nil {
			p.stats.tcpPolicyRejected.Add(1)
			p.reject(req, id, fmt.Errorf("proxy: policy: %w", err))
			return
		}
	}
	up, err := p.dialTCP(ctx, id)
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
	p.relay(ctx, id, conn, up)
}

// dialTCP connects upstream to id.Dst within the connect timeout.
func (p *Proxy) dialTCP(ctx context.Context, id stack.FlowID) (net.Conn, error) {
	timeout := &timeoutError{msg: fmt.Sprintf("connect timeout after %v", p.connectTimeout)}
	dctx, release := p.withTimeout(ctx, p.connectTimeout, timeout)
	defer release()
	p.emit(Event{Flow: id, Kind: EventDialStart})
	up, err := p.dialer.DialContext(dctx, "tcp", id.Dst.String())
	if err != nil {
		if context.Cause(dctx) == timeout && !errors.Is(err, timeout) {
			// The dialer reported the cancellation in its own words;
			// say that it was the timeout.
			err = fmt.Errorf("%w: %w", timeout, err)
		}
		err = fmt.Errorf("proxy: dial %s: %w", id.Dst, err)
	}
	p.emit(Event{Flow: id, Kind: EventDialDone, Err: err})
	return up, err
}

func (p *Proxy) countDialFailure(err error) {
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
	timeout := &timeoutError{msg: fmt.Sprintf("app handshake timeout after %v", p.connectTimeout)}
	actx, release := p.withTimeout(ctx, p.connectTimeout, timeout)
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
