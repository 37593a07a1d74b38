package tcp

import (
	"context"
	"io"
	"math"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/stack"
)

// Conn is an established connection of the engine (stack.Conn). Its
// methods lock the flow and call into the TCB; blocking calls wait on the
// flow's waiters, never inside the engine.
type Conn struct {
	f             *flow
	local, remote *net.TCPAddr

	// Guarded by f.mu. The deadlines are instants of the engine's clock,
	// 0 for none (see setDeadlines).
	closed, readClosed          bool
	readDeadline, writeDeadline clock.Time
}

var (
	_ stack.WriteFromConn = (*Conn)(nil)
	_ stack.ReadToConn    = (*Conn)(nil)
	_ stack.StateConn     = (*Conn)(nil)
)

func newConn(f *flow) *Conn {
	return &Conn{
		f:      f,
		local:  net.TCPAddrFromAddrPort(f.id.Dst),
		remote: net.TCPAddrFromAddrPort(f.id.Src),
	}
}

func (c *Conn) ID() stack.FlowID     { return c.f.id }
func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Read reads in-order data. It returns io.EOF after the app's FIN, an
// error wrapping ECONNRESET after its RST, net.ErrClosed after Close or
// CloseRead, and os.ErrDeadlineExceeded past the read deadline. When the
// FIN has arrived and this read takes the last data before it, the data
// and io.EOF come together, so that a relay can send them on together
// (see WriteFIN).
func (c *Conn) Read(p []byte) (int, error) {
	f := c.f
	for {
		f.mu.Lock()
		n, err, wait := c.readLocked(p)
		if !wait {
			f.mu.Unlock()
			return n, err
		}
		dl, dlCh, ch := c.readDeadline, f.wait.deadlineCh(), f.wait.readCh()
		f.mu.Unlock()
		if err := c.await(ch, dl, dlCh); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

// TryRead is Read without waiting: where Read would wait it returns 0,
// syscall.EAGAIN, and the function given to SetNotify runs once that may
// have changed.
func (c *Conn) TryRead(p []byte) (int, error) {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err, wait := c.readLocked(p)
	if wait {
		return 0, syscall.EAGAIN
	}
	return n, err
}

// readLocked is one attempt of Read; wait reports that there is nothing
// to return yet.
func (c *Conn) readLocked(p []byte) (n int, err error, wait bool) {
	f := c.f
	if err := c.readGateLocked("read"); err != nil {
		return 0, err, false
	}
	n, err = f.tcb.Read(p)
	if n == 0 && err == nil && len(p) > 0 {
		return 0, nil, true
	}
	if n > 0 {
		// Reading may open the window enough for an update.
		c.flushLocked()
	}
	if f.tcb.Readable() {
		signal(f.wait.read) // more for another reader
	}
	if n > 0 && err == nil && f.tcb.atEOF() {
		err = io.EOF
	}
	if err != nil && err != io.EOF {
		return n, c.opErr("read", err), false
	}
	return n, err, false
}

// readGateLocked is why a Read or Peek (op) fails before it looks at the
// data: the Conn closed for reading, or its read deadline passed.
func (c *Conn) readGateLocked(op string) error {
	switch {
	case c.closed || c.readClosed:
		return c.opErr(op, net.ErrClosed)
	case c.expired(c.readDeadline):
		return c.opErr(op, os.ErrDeadlineExceeded)
	}
	return nil
}

// Peek is Read without consuming: it waits as Read does, then copies the
// start of the buffered data into p and leaves it for the next Read (as
// recv with MSG_PEEK does). At the end of the stream it returns 0, io.EOF.
func (c *Conn) Peek(p []byte) (int, error) {
	f := c.f
	for {
		f.mu.Lock()
		if err := c.readGateLocked("peek"); err != nil {
			f.mu.Unlock()
			return 0, err
		}
		if n := f.tcb.Peek(p); n > 0 || len(p) == 0 {
			signal(f.wait.read) // the data is still there for a reader
			f.mu.Unlock()
			return n, nil
		}
		if f.tcb.Readable() {
			// No data, but Read would not wait: EOF or the error.
			_, err := f.tcb.Read(nil)
			f.mu.Unlock()
			if err != nil {
				return 0, c.opErr("peek", err)
			}
			return 0, io.EOF
		}
		dl, dlCh, ch := c.readDeadline, f.wait.deadlineCh(), f.wait.readCh()
		f.mu.Unlock()
		if err := c.await(ch, dl, dlCh); err != nil {
			return 0, c.opErr("peek", err)
		}
	}
}

// Write copies p into the send buffer, waiting for space as needed. It
// returns net.ErrClosed after Close or CloseWrite and an error wrapping
// ECONNRESET after a reset.
func (c *Conn) Write(p []byte) (int, error) { return c.write(p, false) }

// WriteFIN is Write followed by CloseWrite, except that the FIN is queued
// with the last of p before anything is sent, so it rides on p's last
// segment (RFC 9293 §3.6 lets a FIN share a segment with data). The relay
// uses it to pass on an upstream's last data and FIN as they came,
// together, so that who closes first does not change.
func (c *Conn) WriteFIN(p []byte) (int, error) {
	n, err := c.write(p, true)
	if err == nil && len(p) == 0 {
		err = c.CloseWrite()
	}
	return n, err
}

// write is Write; with fin, the FIN is queued once all of p is.
func (c *Conn) write(p []byte, fin bool) (int, error) {
	f := c.f
	written := 0
	for {
		f.mu.Lock()
		if c.closed {
			f.mu.Unlock()
			return written, c.opErr("write", net.ErrClosed)
		}
		if c.expired(c.writeDeadline) {
			f.mu.Unlock()
			return written, c.opErr("write", os.ErrDeadlineExceeded)
		}
		n, err := f.tcb.Write(p[written:])
		written += n
		finNow := fin && n > 0 && err == nil && written == len(p)
		if finNow {
			f.tcb.CloseWrite()
		}
		if n > 0 {
			c.flushLocked()
		}
		if finNow {
			f.wait.wakeAll() // as CloseWrite does
		}
		if err != nil || written == len(p) {
			if f.tcb.Writable() {
				signal(f.wait.write) // room for another writer
			}
			f.mu.Unlock()
			if err != nil {
				return written, c.opErr("write", err)
			}
			return written, nil
		}
		dl, dlCh, ch := c.writeDeadline, f.wait.deadlineCh(), f.wait.writeCh()
		f.mu.Unlock()
		if err := c.await(ch, dl, dlCh); err != nil {
			return written, c.opErr("write", err)
		}
	}
}

// TryWrite is Write without waiting, and with fin the FIN queued once
// all of p is (WriteFIN): it copies what the send buffer takes now and
// returns the count, which is short when the buffer filled up; when it
// takes nothing it returns 0, syscall.EAGAIN, and the function given to
// SetNotify runs once there is room.
func (c *Conn) TryWrite(p []byte, fin bool) (int, error) {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := c.writeGateLocked(); err != nil {
		return 0, err
	}
	n, err := f.tcb.Write(p)
	if err != nil {
		return n, c.opErr("write", err)
	}
	c.wroteLocked(n, fin && n == len(p))
	if n == 0 && len(p) > 0 {
		return 0, syscall.EAGAIN
	}
	return n, nil
}

// TryReadTo is TryRead with the data handed to write straight from the
// receive buffer, with no copy in between (stack.ReadToConn): write gets
// a contiguous run of the buffered data, last set when that run is all
// the data before the app's FIN, and returns how much it took. write runs
// with the Conn's lock held, so it must not block or call the Conn: a
// non-blocking socket write. TryReadTo returns the bytes taken with
// write's error, or with io.EOF once the data before the FIN is all taken;
// 0 and syscall.EAGAIN when there is nothing to read yet (write not
// called); else the Conn's error as TryRead returns it.
func (c *Conn) TryReadTo(write func(p []byte, last bool) (int, error)) (int, error) {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := c.readGateLocked("read"); err != nil {
		return 0, err
	}
	n, werr, err := f.tcb.ReadTo(write)
	if n > 0 {
		// Reading may open the window enough for an update.
		c.flushLocked()
	}
	if f.tcb.Readable() {
		signal(f.wait.read) // more for another reader
	}
	switch {
	case werr != nil:
		return n, werr
	case n == 0 && err == nil:
		return 0, syscall.EAGAIN
	case err == nil && f.tcb.atEOF():
		return n, io.EOF
	case err != nil && err != io.EOF:
		return n, c.opErr("read", err)
	}
	return n, err
}

// TryWriteFrom is TryWrite with the bytes read straight into the send
// buffer, with no copy in between (stack.WriteFromConn): read gets free
// buffer space and returns how much it filled; when it returns io.EOF as
// well, the FIN is queued behind that data and leaves with it. read runs
// with the Conn's lock held, so it must not block or call the Conn: a
// non-blocking socket read. TryWriteFrom returns read's count and error,
// or 0 and syscall.EAGAIN without calling read when the buffer is full,
// or the Conn's own error (a *net.OpError) when it takes no data.
func (c *Conn) TryWriteFrom(read func(p []byte) (int, error)) (int, error) {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := c.writeGateLocked(); err != nil {
		return 0, err
	}
	n, rerr, err := f.tcb.WriteFrom(read)
	if err != nil {
		return 0, c.opErr("write", err)
	}
	c.wroteLocked(n, rerr == io.EOF)
	if n == 0 && rerr == nil {
		return 0, syscall.EAGAIN
	}
	return n, rerr
}

// writeGateLocked is why a non-blocking write fails before it looks at
// the buffer: the Conn is closed, or its write deadline passed.
func (c *Conn) writeGateLocked() error {
	switch {
	case c.closed:
		return c.opErr("write", net.ErrClosed)
	case c.expired(c.writeDeadline):
		return c.opErr("write", os.ErrDeadlineExceeded)
	}
	return nil
}

// wroteLocked follows a non-blocking write of n bytes: with fin the FIN
// is queued behind them, and what is due goes out.
func (c *Conn) wroteLocked(n int, fin bool) {
	if fin {
		c.f.tcb.CloseWrite()
	}
	if n > 0 || fin {
		c.flushLocked()
	}
	if fin {
		c.f.wait.wakeAll() // as CloseWrite does
	}
}

// SetNotify registers fn to run whenever the Conn may have become
// readable or writable, or has failed or closed: the readiness TryRead
// and TryWrite wait for, without a goroutine per connection waiting on
// it. fn runs on the engine's goroutines with the connection's lock
// held, so it must return quickly and not call the Conn; it typically
// schedules whoever calls TryRead and TryWrite. A spurious call is
// possible. Only one function is kept; nil removes it.
func (c *Conn) SetNotify(fn func()) {
	f := c.f
	f.mu.Lock()
	f.wait.notify = fn
	f.mu.Unlock()
}

// SetNotifyAfter registers fn to run instead of SetNotify's function for
// what the engine finds while it processes packets read from the TUN:
// once that batch is written out and every lock is dropped, on the
// engine's goroutine, so fn may call the Conn (a relay moving the bytes
// at once, without a goroutine of its own). Everywhere else SetNotify's
// function still runs. nil removes it.
func (c *Conn) SetNotifyAfter(fn func()) {
	f := c.f
	f.mu.Lock()
	f.wait.after = fn
	f.mu.Unlock()
}

// flushLocked emits what the TCB has due and writes it out. The flow
// lock is held, which keeps one flow's segments in order.
func (c *Conn) flushLocked() {
	e := c.f.e
	b := e.getBatch()
	c.f.afterLocked(e.clk.Now(), b)
	e.putBatch(b)
}

// await blocks until ch signals, the deadline passes or changes, or the
// engine closes. The deadline is a timer of the engine's clock, so a
// manual clock decides when it passes.
func (c *Conn) await(ch <-chan struct{}, dl clock.Time, dlCh <-chan struct{}) error {
	var timeout chan struct{}
	if dl != 0 {
		clk := c.f.e.clk
		d := dl.Sub(clk.Now())
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		passed := make(chan struct{})
		t := clk.AfterFunc(d, func() { close(passed) })
		defer t.Stop()
		timeout = passed
	}
	select {
	case <-ch:
	case <-dlCh:
	case <-timeout:
		return os.ErrDeadlineExceeded
	case <-c.f.e.ctx.Done():
	}
	return nil
}

// expired reports whether a deadline is set and has passed (net.Conn
// semantics: even data already buffered is not returned then).
func (c *Conn) expired(dl clock.Time) bool { return dl != 0 && !c.f.e.clk.Now().Before(dl) }

// awaitEstablished waits for the third ACK of the handshake.
func (c *Conn) awaitEstablished(ctx context.Context) error {
	f := c.f
	for {
		f.mu.Lock()
		if c.closed {
			// Closed before Accept returned it (only an engine-level
			// caller can): the TCB may be frozen in TIME-WAIT by now.
			f.mu.Unlock()
			return net.ErrClosed
		}
		st, err, gone, ch := f.tcb.State(), f.tcb.Err(), f.gone, f.wait.stateCh()
		f.mu.Unlock()
		switch {
		case st >= Established && st != TimeWait:
			return nil
		case err != nil || st == Closed || gone:
			if err == nil {
				err = ErrConnReset
			}
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-f.e.ctx.Done():
			return errEngineClosed
		}
	}
}

// State returns the TCB's state, "CLOSED" once the flow is gone.
func (c *Conn) State() string {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return Closed.String()
	}
	return f.tcb.State().String()
}

// Close closes both directions: FIN after the data already written
// (RST instead if received data is still unread, RFC 9293 §3.6).
func (c *Conn) Close() error {
	return c.control(func() { c.closed = true; c.f.tcb.Close() })
}

// CloseWrite sends FIN after the data already written; reading goes on.
func (c *Conn) CloseWrite() error {
	return c.control(func() { c.f.tcb.CloseWrite() })
}

// CloseRead discards further input; Reads fail with net.ErrClosed.
func (c *Conn) CloseRead() error {
	return c.control(func() { c.readClosed = true; c.f.tcb.CloseRead() })
}

// Abort resets the connection at once (RST to the app).
func (c *Conn) Abort() error {
	return c.control(func() { c.closed = true; c.f.tcb.Abort() })
}

// control runs op on the TCB, emits what it caused and wakes waiters.
func (c *Conn) control(op func()) error {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.closed {
		return c.opErr("close", net.ErrClosed)
	}
	op()
	if !f.gone {
		c.flushLocked()
	}
	f.wait.wakeAll()
	return nil
}

// The deadline setters take wall-clock times, as net.Conn's do (the
// package's only time.Time); setDeadlines turns them into instants of the
// engine's clock.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.setDeadlines(t, true, true)
}
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.setDeadlines(t, true, false) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadlines(t, false, true) }

// setDeadlines stores t, converted to the engine's clock: the deadline
// passes once that clock has moved by time.Until(t), so a manual clock
// drives Conn deadlines as it drives the TCBs' timers.
func (c *Conn) setDeadlines(t time.Time, read, write bool) error {
	f := c.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.closed {
		return c.opErr("set deadline", net.ErrClosed) // as net.TCPConn
	}
	dl := deadlineAt(f.e.clk.Now(), t)
	if read {
		c.readDeadline = dl
	}
	if write {
		c.writeDeadline = dl
	}
	f.wait.deadlineChanged()
	return nil
}

// deadlineAt is the wall-clock deadline t as an instant of a clock now
// reading now: the zero time stays 0 (no deadline), a time in the past
// becomes now (passed, yet not 0), one too far to represent the latest
// instant.
func deadlineAt(now clock.Time, t time.Time) clock.Time {
	if t.IsZero() {
		return 0
	}
	d := time.Until(t)
	switch {
	case d <= 0:
		return now
	case d > time.Duration(math.MaxInt64-now):
		return math.MaxInt64
	}
	return now.Add(d)
}

// opErr wraps err as a *net.OpError, as net.TCPConn's errors are; io.EOF
// stays bare, as callers compare it with ==.
func (c *Conn) opErr(op string, err error) error {
	if err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// waiters wakes goroutines blocked on a flow. read, write and state hold
// one pending signal each, so a wake-up is never lost; a woken waiter
// re-checks the TCB, and passes the signal on when the condition still
// holds for others (see Read and Write). deadline is closed and dropped
// whenever a deadline changes, waking every blocked reader and writer at
// once. Each channel is made by the first waiter that needs it (under
// the flow's mutex, before it looks at the TCB, so no signal is lost):
// a connection served through TryRead and TryWrite never has any, and
// an idle one costs four channels less. notify is SetNotify's function.
// Every field is guarded by the flow's mutex.
type waiters struct {
	read, write, state chan struct{}
	deadline           chan struct{}
	notify             func()
	// after is SetNotifyAfter's function.
	after func()
}

func (w *waiters) readCh() chan struct{}  { return makeSignal(&w.read) }
func (w *waiters) writeCh() chan struct{} { return makeSignal(&w.write) }
func (w *waiters) stateCh() chan struct{} { return makeSignal(&w.state) }

func makeSignal(ch *chan struct{}) chan struct{} {
	if *ch == nil {
		*ch = make(chan struct{}, 1)
	}
	return *ch
}

func (w *waiters) deadlineCh() chan struct{} {
	if w.deadline == nil {
		w.deadline = make(chan struct{})
	}
	return w.deadline
}

// signal leaves a pending signal on ch; a nil ch has no waiter.
func signal(ch chan struct{}) {
	if ch == nil {
		return
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// wake signals the waiters that ev concerns and calls notify.
func (w *waiters) wake(ev Events) {
	w.signalAll(ev)
	if w.notify != nil && notifies(ev) {
		w.notify()
	}
}

// notifies reports whether ev is one SetNotify's function hears of.
func notifies(ev Events) bool {
	return ev&(EventReadable|EventPeerFIN|EventWritable|EventReset|EventClosed) != 0
}

// signalAll signals the blocked waiters that ev concerns.
func (w *waiters) signalAll(ev Events) {
	if ev&(EventReadable|EventPeerFIN|EventReset|EventClosed) != 0 {
		signal(w.read)
	}
	if ev&(EventWritable|EventReset|EventClosed) != 0 {
		signal(w.write)
	}
	if ev&(EventEstablished|EventReset|EventClosed) != 0 {
		signal(w.state)
	}
}

func (w *waiters) wakeAll() { w.wake(EventReadable | EventWritable | EventClosed) }

// deadlineChanged wakes every blocked Read and Write so they re-read
// their deadline.
func (w *waiters) deadlineChanged() {
	if w.deadline != nil {
		close(w.deadline)
		w.deadline = nil
	}
}
