package tcp

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"

	"github.com/tungate/tungate/stack"
)

// request is a flow's SYN waiting for the handler (stack.Request).
type request struct {
	f       *flow
	decided atomic.Bool
	// appGone is set, under f.mu, when the app reset the pending SYN or
	// the engine closed: Accept then fails.
	appGone bool
	// preEstablished marks a connection completed by a SYN cookie: there
	// was nothing to hold, Accept returns it at once and Reject resets it.
	preEstablished bool
}

var _ stack.Request = (*request)(nil)

var (
	errDecided = errors.New("tcp: request already accepted or rejected")
	errAppGone = fmt.Errorf("tcp: the app reset the connection before it was accepted: %w", syscall.ECONNRESET)
)

func (r *request) ID() stack.FlowID { return r.f.id }

// Accept sends the SYN-ACK (RFC 9293 §3.10.7.2) and waits until the app's
// ACK makes the connection ESTABLISHED, ctx ends, or the handshake fails.
func (r *request) Accept(ctx context.Context) (stack.Conn, error) {
	if !r.decided.CompareAndSwap(false, true) {
		return nil, errDecided
	}
	f, e := r.f, r.f.e
	e.ec.accepted.Add(1)
	if r.preEstablished {
		return f.conn, nil
	}
	b := e.getBatch()
	f.mu.Lock()
	if r.appGone || f.gone {
		f.mu.Unlock()
		e.putBatch(b)
		return nil, errAppGone
	}
	now := e.clk.Now()
	e.mu.Lock()
	f.inPending = false
	e.pending--
	f.inSynRcvd = true
	e.synRcvd++
	e.mu.Unlock()
	f.tcb = NewSynReceived(e.config(f.id), &f.syn, e.isn.isn(f.id.Dst, f.id.Src, now), tsOffset(), now)
	e.opts.Trace.attach(f)
	f.conn = newConn(f)
	f.afterLocked(now, b)
	f.mu.Unlock()
	e.putBatch(b)
	if err := f.conn.awaitEstablished(ctx); err != nil {
		f.conn.Abort()
		return nil, err
	}
	return f.conn, nil
}

// Reject refuses the flow: a RST (the app sees ECONNREFUSED) or silence.
func (r *request) Reject(reset bool) {
	if !r.decided.CompareAndSwap(false, true) {
		return
	}
	f, e := r.f, r.f.e
	e.ec.rejected.Add(1)
	if r.preEstablished {
		if reset {
			f.conn.Abort()
		} else {
			f.conn.Close()
		}
		return
	}
	b := e.getBatch()
	f.mu.Lock()
	if !f.gone {
		if reset {
			e.opts.Trace.note(f.id, "handler rejected: RST")
			e.sendRST(f.id, &f.syn, b)
		} else {
			e.opts.Trace.note(f.id, "handler rejected: SYN dropped")
		}
		f.retireLocked()
	}
	f.mu.Unlock()
	e.putBatch(b)
}
