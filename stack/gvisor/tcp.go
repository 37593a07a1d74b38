package gvisor

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tungate/tungate/stack"
)

// handshakeWakeInterval is how often a cancelled Accept re-wakes gVisor's
// handshake wait; see createEndpoint.
const handshakeWakeInterval = 5 * time.Millisecond

// onTCPRequest runs for each new SYN, on the goroutine gVisor's forwarder
// starts for it. The Stack adopts that goroutine (counts it in wg, so Close
// waits for it) and runs the handler on it. A goroutine that starts after
// Close has begun only drops the SYN and returns.
func (s *Stack) onTCPRequest(fr *tcp.ForwarderRequest) {
	if !s.adopt() {
		fr.Complete(false)
		return
	}
	defer s.wg.Done()
	req := &tcpRequest{s: s, fr: fr, id: flowID(fr.ID())}
	s.tcpFlows.Add(1)
	s.log.Debug("gvisor: tcp flow", "flow", req.id)
	s.handler.HandleTCP(s.ctx, req)
	if !req.decided.Load() {
		// Leaving it pending would hold the forwarder slot (and absorb
		// the app's SYNs) forever.
		s.log.Warn("gvisor: handler returned without Accept or Reject; resetting", "flow", req.id)
		req.Reject(true)
	}
}

// tcpRequest is a SYN held by gVisor's forwarder, unanswered until Accept
// or Reject. It implements stack.Request.
type tcpRequest struct {
	s       *Stack
	fr      *tcp.ForwarderRequest
	id      stack.FlowID
	decided atomic.Bool // set by the first Accept or Reject
}

var _ stack.Request = (*tcpRequest)(nil)

// ID returns the flow the app asked for.
func (r *tcpRequest) ID() stack.FlowID { return r.id }

// Accept answers the SYN and waits for the handshake to complete, until
// ctx is done or the stack closes. Errors: net.ErrClosed when the stack is
// closed, ctx.Err() when ctx ended first, a syscall errno (ECONNRESET,
// ETIMEDOUT, ...) when the app gave up, and a "decided" error on a second
// call. Each error names the flow.
func (r *tcpRequest) Accept(ctx context.Context) (stack.Conn, error) {
	if !r.decided.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("gvisor: accept %s: %w", r.id, errDecided)
	}
	// The forwarder needs Complete whatever happens; after the handshake
	// it only frees the request slot.
	defer r.fr.Complete(false)
	c, err := r.accept(ctx)
	if err != nil {
		r.s.tcpAcceptFail.Add(1)
		r.s.log.Debug("gvisor: accept failed", "flow", r.id, "err", err)
		return nil, fmt.Errorf("gvisor: accept %s: %w", r.id, err)
	}
	r.s.tcpAccepted.Add(1)
	return c, nil
}

func (r *tcpRequest) accept(ctx context.Context) (*tcpConn, error) {
	if r.s.isClosed() {
		return nil, net.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wq := new(waiter.Queue)
	ep, terr := r.createEndpoint(ctx, wq)
	if terr != nil {
		if err := r.cancelled(ctx); err != nil {
			return nil, err
		}
		return nil, translate(terr)
	}
	c := new(tcpConn)
	c.init(ep, wq, r.id, true, func() { r.s.unregister(c) })
	if err := r.cancelled(ctx); err != nil {
		_ = c.Abort()
		return nil, err
	}
	if !r.s.register(c) {
		_ = c.Abort()
		return nil, net.ErrClosed
	}
	return c, nil
}

// cancelled reports why Accept was cut short, or nil.
func (r *tcpRequest) cancelled(ctx context.Context) error {
	if r.s.isClosed() {
		return net.ErrClosed
	}
	return ctx.Err()
}

// createEndpoint runs the forwarder's handshake, which blocks until the
// app's ACK arrives or the handshake fails and takes no context. To cancel
// it, a helper goroutine (joined before return) notifies wq: the handshake
// wait wakes, finds the endpoint not yet connected, closes it and fails.
// The notification is repeated because one sent before gVisor registered
// its waiter would be lost.
func (r *tcpRequest) createEndpoint(ctx context.Context, wq *waiter.Queue) (tcpip.Endpoint, tcpip.Error) {
	created := make(chan struct{})
	helperDone := make(chan struct{})
	go func() {
		defer close(helperDone)
		select {
		case <-created:
			return
		case <-ctx.Done():
		case <-r.s.ctx.Done():
		}
		tick := time.NewTicker(handshakeWakeInterval)
		defer tick.Stop()
		for {
			wq.Notify(waiter.WritableEvents)
			select {
			case <-created:
				return
			case <-tick.C:
			}
		}
	}()
	ep, terr := r.fr.CreateEndpoint(wq)
	close(created)
	<-helperDone
	return ep, terr
}

// Reject refuses the flow: with reset the app receives a RST, without the
// SYN is dropped. Calls after the first Accept or Reject do nothing, and
// once the stack is closing no RST is sent.
func (r *tcpRequest) Reject(reset bool) {
	if !r.decided.CompareAndSwap(false, true) {
		return
	}
	if r.s.isClosed() {
		reset = false
	}
	r.s.tcpRejected.Add(1) // before the RST, which tests observe
	r.s.log.Debug("gvisor: tcp flow rejected", "flow", r.id, "reset", reset)
	r.fr.Complete(reset)
}
