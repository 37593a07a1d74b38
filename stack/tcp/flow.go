package tcp

import (
	"sync"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// flow is one entry of the engine's table: a SYN waiting for the
// handler's decision (tcb and tw nil) or a connection with its TCB, from
// SYN-RECEIVED until the TCB is done (TIME-WAIT included; once the
// application has closed, TIME-WAIT keeps a frozen record in tw instead,
// see timewait.go).
type flow struct {
	id stack.FlowID
	e  *Engine

	// mu guards every field below and all calls into tcb.
	mu           sync.Mutex
	tcb          *TCB
	tw           *twRecord // frozen TIME-WAIT (tcb nil); thawLocked before using tcb
	syn          Segment   // pending: the app's SYN (options; payload dropped)
	req          *request  // pending: the undecided request; nil once decided
	gone         bool      // removed from the table; no more input
	inPending    bool      // counted in Engine.pending
	inSynRcvd    bool      // counted in Engine.synRcvd
	inTimeWait   bool      // counted in Engine.timeWait
	deferred     bool      // in an outBatch's deferred list (see deferOutput)
	notifyQueued bool      // in an outBatch's notifyQ (see Engine.inputBatch)
	wait         waiters
	conn         *Conn

	// heap position and deadline, guarded by e.timers.mu.
	heapIdx  int
	deadline clock.Time
}

// segmentOf fills seg from a validated TCP packet.
func segmentOf(seg *Segment, t packet.TCP) {
	seg.Seq = Seq(t.Seq())
	seg.Ack = Seq(t.Ack())
	seg.Flags = t.Flags()
	seg.Wnd = t.Window()
	seg.Payload = t.Payload()
	// RFC 9293 §3.1: malformed options are dropped (parsing stops there);
	// what was decoded before them is kept.
	seg.Opts, _ = packet.ParseTCPOptions(t.Options())
}

// inputTCP processes one inbound TCP segment.
func (e *Engine) inputTCP(p packet.Packet, b *outBatch) {
	id := stack.FlowID{Src: p.SrcAddrPort(), Dst: p.DstAddrPort()}
	// The segment lives in the pooled batch: the TCB's trace hook makes
	// any *Segment it is given escape, and a local would be allocated
	// per packet.
	seg := &b.in
	segmentOf(seg, p.TCP())
	now := e.clk.Now()
	for {
		e.mu.RLock()
		f := e.flows[id]
		e.mu.RUnlock()
		if f == nil {
			e.listen(id, seg, now, b)
			return
		}
		if f.input(seg, now, b) {
			return
		}
		// The flow was TIME-WAIT and the SYN starts a new connection, or
		// it was removed meanwhile: look again.
	}
}

// input hands seg to the flow. It returns false when the segment must be
// processed as if no flow existed (the flow just ended).
func (f *flow) input(seg *Segment, now clock.Time, b *outBatch) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return false
	}
	f.thawLocked()
	if f.tcb == nil {
		f.inputPending(seg, b)
		return true
	}
	// RFC 6191 / RFC 9293 §3.6.1: a new incarnation replaces TIME-WAIT,
	// but only once the application has closed its Conn. One that only
	// shut down writing may still read what the old incarnation left, so
	// the SYN goes to Input, which answers with a challenge ACK (RFC 5961
	// §4), as Linux does for a socket not yet closed.
	appDone := f.conn == nil || f.conn.closed
	if appDone && seg.Flags&(packet.SYN|packet.ACK|packet.RST) == packet.SYN && f.tcb.AcceptsNewSyn(seg) {
		f.retireLocked()
		return false
	}
	f.tcb.Input(seg, now)
	if b.coalesce && f.tcb.State() == Established && !f.tcb.hasOutOfOrder() {
		b.deferOutput(f)
		return true
	}
	f.afterLocked(now, b)
	return true
}

// inputPending handles a segment for a SYN whose handler has not decided.
func (f *flow) inputPending(seg *Segment, b *outBatch) {
	e := f.e
	switch {
	case seg.Flags&packet.RST != 0:
		// The app gave up (RFC 9293 §3.10.7.2 would ignore a RST in
		// LISTEN, but this flow has a SYN in hand: its sender reset it).
		if seg.Seq == f.syn.Seq.Add(1) || seg.Seq == f.syn.Seq {
			f.req.appGone = true
			f.retireLocked()
		}
	case seg.Flags&(packet.SYN|packet.ACK) == packet.SYN:
		if seg.Seq == f.syn.Seq {
			e.ec.synRetransAbsorbed.Add(1) // retransmission while we dial
			return
		}
		// A different SYN for the same 4-tuple: the app restarted; keep
		// the newest so the SYN-ACK acknowledges what it expects.
		f.syn.Seq, f.syn.Wnd, f.syn.Opts = seg.Seq, seg.Wnd, seg.Opts
	default:
		// Nothing was sent to it yet: an ACK here is for some other
		// incarnation (RFC 9293 §3.10.7.2: LISTEN answers it with RST).
		if seg.Flags&packet.ACK != 0 {
			e.sendRST(f.id, seg, b)
		}
	}
}

// afterLocked runs after every call into the TCB: it emits what is due,
// wakes waiters, re-arms the timer and retires a finished TCB.
func (f *flow) afterLocked(now clock.Time, b *outBatch) {
	t := f.tcb
	if t == nil {
		// Frozen in TIME-WAIT since its output was deferred (runDeferred):
		// a frozen record has nothing due.
		return
	}
	b.cur = f.id
	t.Output(now, b.emitFn)
	if !f.inTimeWait && t.State() == TimeWait {
		f.enterTimeWaitLocked()
	}
	ev := t.Events()
	if f.inSynRcvd && t.State() != SynReceived {
		f.inSynRcvd = false
		f.e.mu.Lock()
		f.e.synRcvd--
		f.e.mu.Unlock()
	}
	switch {
	case ev == 0:
	case b.input && f.wait.after != nil && notifies(ev):
		f.wait.signalAll(ev)
		if !f.notifyQueued {
			f.notifyQueued = true
			b.notifyQ = append(b.notifyQ, f)
		}
	default:
		f.wait.wake(ev)
	}
	if t.Done() {
		f.retireLocked()
		return
	}
	f.e.timers.set(f, t.Deadline())
	// Freeze only once the application has closed its Conn: its methods
	// then no longer reach the TCB (they fail with net.ErrClosed first).
	if f.inTimeWait && f.conn != nil && f.conn.closed {
		if r := t.freezeTimeWait(); r != nil {
			// A closed Conn's methods return before waiting: its
			// channels go too, once whoever was blocked on them is
			// woken to see the Conn closed (signalling a nil channel
			// afterwards is a no-op).
			f.wait.wakeAll()
			f.tw, f.tcb, f.wait = r, nil, waiters{}
		}
	}
}

// thawLocked turns a frozen TIME-WAIT record back into a TCB before
// anything calls into it; afterLocked freezes it again.
func (f *flow) thawLocked() {
	if f.tw != nil {
		f.tcb, f.tw = f.tw.thaw(), nil
	}
}

// enterTimeWaitLocked counts the flow in the engine's TIME-WAIT table,
// or, when the table is full, ends TIME-WAIT at once (Options.MaxTimeWait).
// The last ACK has been emitted already.
func (f *flow) enterTimeWaitLocked() {
	e := f.e
	e.mu.Lock()
	full := e.timeWait >= e.opts.MaxTimeWait
	if !full {
		e.timeWait++
		f.inTimeWait = true
	}
	e.mu.Unlock()
	if full {
		e.ec.timeWaitOverflows.Add(1)
		f.tcb.EndTimeWait("TIME-WAIT table full")
	}
}

// retireLocked removes the flow from the engine for good.
func (f *flow) retireLocked() {
	if f.gone {
		return
	}
	f.gone = true
	e := f.e
	e.mu.Lock()
	if e.flows[f.id] == f {
		delete(e.flows, f.id)
	}
	if f.inPending {
		f.inPending = false
		e.pending--
	}
	if f.inSynRcvd {
		f.inSynRcvd = false
		e.synRcvd--
	}
	if f.inTimeWait {
		f.inTimeWait = false
		e.timeWait--
	}
	e.mu.Unlock()
	e.timers.remove(f)
	e.opts.Trace.forget(f.id)
	f.wait.wakeAll()
}

// onTimer runs the TCB's due timers.
func (f *flow) onTimer(now clock.Time, b *outBatch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.thawLocked()
	if f.gone || f.tcb == nil {
		return
	}
	f.tcb.OnTimer(now)
	f.afterLocked(now, b)
}

// shutdown aborts the flow as the engine closes.
func (f *flow) shutdown(b *outBatch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return
	}
	f.thawLocked()
	if f.tcb == nil {
		if f.req != nil {
			f.req.appGone = true
		}
		f.e.sendRST(f.id, &f.syn, b)
		f.retireLocked()
		return
	}
	f.tcb.Abort()
	f.afterLocked(f.e.clk.Now(), b)
	f.retireLocked()
}
