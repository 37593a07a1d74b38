package proxy

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tungate/tungate/stack"
)

// The evented relay. tcpRelay (relay.go) runs a goroutine per direction,
// each blocked in Read for as long as the flow lives: about 12 KiB of
// stacks per connection, the largest part of an idle connection's cost.
// evRelay serves the same flow with no goroutine while it is idle. Each
// side is an endpoint that never blocks — the own engine's Conn through
// stack.NonblockingConn, a kernel socket through non-blocking system
// calls — and says when it may have become ready: the engine calls the
// Conn's notify function, the poller reports the socket's epoll events.
// Either schedules the relay, which then runs on a goroutine of its own
// until neither direction can move, and returns. A connection costs a
// goroutine only while it has data to move, and a large buffer only while
// a direction holds data its destination cannot take yet.
//
// The relay's teardown is tcpRelay's, event for event: a FIN is passed on
// as a half-close (with the last data, on its segment, see finwrite.go),
// a reset or a failed write aborts both sides, the watchdog's timeouts
// and the proxy's Close abort both. All of it happens on the relay's
// goroutine, so the sides are closed by nobody else while it uses them.

// The scheduling states of an evRelay.
const (
	schedIdle    int32 = iota // no goroutine; the next notify starts one
	schedRunning              // a goroutine is working
	schedAgain                // working, and notified since it started
	schedDone                 // ended; notifications are ignored
)

// The interrupts of an evRelay, set from other goroutines and acted upon
// by the relay's own.
const (
	intrNone int32 = iota
	intrAbort
	intrIdle
	intrHalfClose
)

// evRelay is one flow relayed by events.
type evRelay struct {
	p     *Proxy
	id    stack.FlowID
	ends  [2]endpoint // by Side
	wd    *watchdog
	sched atomic.Int32
	intr  atomic.Int32

	// Owned by the running goroutine.
	pend     [2]pending // by Side: read from it, not yet written to the other
	done     [2]bool    // by Side: its direction has ended (FIN passed on)
	aborted  [2]bool
	reset    [2]bool
	finished int        // directions ended by EOF
	e        *connEntry // listed in p.conns; counts the bytes
	// budget is what a pass run inline (notifyInline) may still move
	// before it hands the rest to a goroutine; negative on a goroutine
	// of the relay's own, which has no limit.
	budget int
}

// inlineBudget is how much a relay run inline on a goroutine that is not
// its own (the TUN reader's, see SetNotifyAfter) moves before handing
// off: a request or a reply passes whole, while a burst the pass finds
// (a download the upstream streams as the app sends a request) goes on
// on the relay's goroutine instead of holding up the TUN's other flows
// for a whole send buffer.
const inlineBudget = 64 << 10

// pending is what a direction read and its destination did not take yet,
// and how the read ended: term is nil (more may come), io.EOF (the FIN,
// passed on after the data) or the error that ended it.
type pending struct {
	buf      *[]byte // pooled; nil while the direction holds no data
	off, end int
	term     error
}

// endpoint is one side of an evRelay.
type endpoint interface {
	// tryRead reads what is there: n > 0 with err nil, or with io.EOF
	// when the FIN follows (or another error that came right after the
	// data); 0 and syscall.EAGAIN when nothing is; else 0 and the error.
	tryRead(p []byte) (int, error)
	// tryWrite writes what fits and, with fin, the FIN once all of p is
	// written; 0, syscall.EAGAIN when nothing fits.
	tryWrite(p []byte, fin bool) (int, error)
	// watch starts the readiness reports; the endpoint is expected to
	// be ready, so the relay runs once after watch anyway.
	watch(r *evRelay) error
	// unwatch stops them; it precedes any close.
	unwatch(r *evRelay)
	conn() net.Conn
}

// startEvented relays app and up by events when both can be, and reports
// whether it did; the relay then owns both connections, the flow's place
// under MaxConnections and a count in p.flows, and ends on its own.
func (p *Proxy) startEvented(e *connEntry, app, up net.Conn) bool {
	id := e.flow
	if !p.evented {
		return false
	}
	if !eventable(app) || !eventable(up) {
		return false
	}
	pl, err := p.getPoller()
	if err != nil {
		return false
	}
	ae, ok := endpointOf(pl, app)
	if !ok {
		return false
	}
	ue, ok := endpointOf(pl, up)
	if !ok {
		return false
	}
	r := &evRelay{p: p, id: id, ends: [2]endpoint{SideApp: ae, SideUpstream: ue}, budget: -1}
	r.sched.Store(schedRunning) // nothing runs before setup ends
	r.e = e
	e.abort = func() { r.interrupt(intrAbort) }
	r.wd = newWatchdog(p.clock, p.limits().idleTimeout, errIdleTimeout, r.timeout)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		r.wd.stop()
		return false
	}
	p.relays[r] = struct{}{}
	p.flows.Add(1)
	p.mu.Unlock()
	p.conns.add(r.e)
	p.stats.tcpActive.Add(1)
	p.stats.tcpEvented.Add(1)
	for side, e := range r.ends {
		if err := e.watch(r); err != nil {
			p.log.Debug("tcp relay: cannot watch", "flow", id, "side", Side(side), "err", err)
			r.intr.CompareAndSwap(intrNone, intrAbort)
		}
	}
	go r.run()
	return true
}

// eventable reports whether endpointOf may take c, without a poller.
func eventable(c net.Conn) bool {
	switch c.(type) {
	case stack.NonblockingConn, *net.TCPConn, kernelSocket:
		return true
	}
	return false
}

// kernelSocket is a Conn that is a kernel TCP socket underneath and adds
// nothing to its reads and writes, only to Close or Abort, and says so:
// the evented relay then uses the socket and still closes and aborts
// through the Conn. The proxy's test Conns (proxytest) are such Conns.
// Any other wrapper of a socket, such as the HTTP tunnel's prefixConn,
// is relayed by tcpRelay through its own Read and Write.
type kernelSocket interface {
	net.Conn
	KernelSocket() *net.TCPConn
}

// endpointOf is c as an endpoint: the own engine's Conn, or a kernel TCP
// socket (the direct dialer's, a SOCKS5 proxy's once connected, and
// kernelSockets).
func endpointOf(pl *poller, c net.Conn) (endpoint, bool) {
	var tc *net.TCPConn
	switch c := c.(type) {
	case stack.NonblockingConn:
		e := &connEnd{c: c}
		e.wf, _ = c.(stack.WriteFromConn)
		e.rt, _ = c.(stack.ReadToConn)
		return e, true
	case *net.TCPConn:
		tc = c
	case kernelSocket:
		tc = c.KernelSocket()
	default:
		return nil, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, false
	}
	s := &sockEnd{c: c, rc: rc, pl: pl, fd: -1}
	if err := rc.Control(func(fd uintptr) { s.fd = int(fd) }); err != nil {
		return nil, false
	}
	s.readFn, s.writeFn, s.readIntoFn, s.writeFromFn = s.doRead, s.doWrite, s.readInto, s.writeFrom
	return s, true
}

// getPoller returns the proxy's poller, made on first use. Failing to
// make one (no epoll) leaves the relays on goroutines, said once.
func (p *Proxy) getPoller() (*poller, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.poller == nil && p.pollerErr == nil {
		p.poller, p.pollerErr = newPoller()
		if p.pollerErr != nil {
			p.log.Warn("proxy: relays use a goroutine per direction", "err", p.pollerErr)
		}
	}
	return p.poller, p.pollerErr
}

// notify schedules the relay: a goroutine starts unless one is running,
// which then looks once more before it returns.
func (r *evRelay) notify() {
	for {
		switch r.sched.Load() {
		case schedIdle:
			if r.sched.CompareAndSwap(schedIdle, schedRunning) {
				go r.run()
				return
			}
		case schedRunning:
			if r.sched.CompareAndSwap(schedRunning, schedAgain) {
				return
			}
		default: // again, done
			return
		}
	}
}

// notifyInline is notify for a caller that holds no lock the relay
// needs: an idle relay runs here, on the caller's goroutine, saving the
// start of one (and the thread woken for it), until it has moved
// inlineBudget bytes; what is left then goes on on a goroutine. A
// running relay is told to look again.
func (r *evRelay) notifyInline() {
	if !r.sched.CompareAndSwap(schedIdle, schedRunning) {
		r.notify()
		return
	}
	r.budget = inlineBudget
	r.run()
}

// interrupt asks the relay to abort both sides for reason (the first
// reason asked stays).
func (r *evRelay) interrupt(reason int32) {
	if r.intr.CompareAndSwap(intrNone, reason) {
		r.notify()
	}
}

// timeout is the watchdog's expiry.
func (r *evRelay) timeout(reason error) {
	if reason == errHalfCloseTimeout {
		r.interrupt(intrHalfClose)
	} else {
		r.interrupt(intrIdle)
	}
}

func (r *evRelay) run() {
	for {
		r.sched.Store(schedRunning)
		if r.work() {
			r.sched.Store(schedDone)
			r.finish()
			return
		}
		if r.budget == 0 {
			// Inline, and the budget is spent: the relay's own goroutine
			// takes over, the state staying running.
			r.budget = -1
			go r.run()
			return
		}
		// An idle relay's next run is on a goroutine of its own unless
		// notifyInline says otherwise; set before it may start.
		b := r.budget
		r.budget = -1
		if r.sched.CompareAndSwap(schedRunning, schedIdle) {
			return
		}
		r.budget = b
	}
}

// work moves data both ways until neither direction can move, and
// reports whether the relay has ended.
func (r *evRelay) work() (ended bool) {
	if reason := r.intr.Load(); reason != intrNone {
		r.interrupted(reason)
		return true
	}
	for {
		moved := false
		for _, from := range [2]Side{SideApp, SideUpstream} {
			m, end := r.move(from)
			if end {
				return true
			}
			moved = moved || m
		}
		if r.done[SideApp] && r.done[SideUpstream] {
			return true
		}
		if !moved || r.budget == 0 {
			return false
		}
	}
}

// move copies from side from to the other side as far as both allow. It
// reports whether anything happened and whether the relay must end.
func (r *evRelay) move(from Side) (moved, end bool) {
	if r.done[from] {
		return false, false
	}
	to := from.other()
	src, dst := r.ends[from], r.ends[to]
	pd := &r.pend[from]
	for {
		if r.budget == 0 {
			return moved, false // the relay's goroutine goes on
		}
		if pd.off < pd.end || pd.term != nil {
			n, err := dst.tryWrite((*pd.buf)[pd.off:pd.end], pd.term == io.EOF)
			if n > 0 {
				pd.off += n
				moved = true
				if s, ok := dst.(*sockEnd); ok {
					s.wrote()
				}
			}
			switch {
			case err == syscall.EAGAIN:
				return moved, false // the destination reports room
			case err != nil:
				r.writeFailed(from, err)
				return true, true
			case pd.off < pd.end:
				continue // a short write: the next one says EAGAIN
			}
			r.count(from, pd.end)
			pd.off, pd.end = 0, 0
			if term := pd.term; term != nil {
				r.release(pd)
				if term == io.EOF {
					r.passedFIN(from)
					return true, false
				}
				r.readEnded(from, term)
				return true, true
			}
			if r.budget == 0 {
				r.release(pd)
				return true, false // read no more here: the relay's goroutine goes on
			}
		}
		if pd.buf == nil {
			if w, ok := dst.(*connEnd); ok && w.wf != nil {
				if s, ok := src.(*sockEnd); ok {
					return r.moveDirect(from, s, w, moved)
				}
			}
			if c, ok := src.(*connEnd); ok && c.rt != nil {
				if s, ok := dst.(*sockEnd); ok {
					return r.moveDirectOut(from, c, s, moved)
				}
			}
			pd.buf = r.p.tcpBufs.get()
		}
		n, err := src.tryRead(*pd.buf)
		if n > 0 {
			r.wd.touch()
			pd.end = n
			moved = true
		}
		switch {
		case err == syscall.EAGAIN:
			r.release(pd)
			return moved, false // the source reports more
		case err == io.EOF:
			r.eof(from)
			pd.term = err
		case err != nil && n > 0:
			pd.term = err // the data first, then the error
		case err != nil:
			r.release(pd)
			r.readEnded(from, err)
			return true, true
		}
	}
}

// moveDirect is move from a kernel socket to the own engine's Conn with
// no buffer of the relay's: the socket is read straight into the Conn's
// send buffer (stack.WriteFromConn), as long as both have room and data.
// A FIN read right behind data leaves with it, as in move.
func (r *evRelay) moveDirect(from Side, src *sockEnd, dst *connEnd, moved bool) (bool, bool) {
	for {
		src.readErr = nil
		n, err := dst.wf.TryWriteFrom(src.readIntoFn)
		if n > 0 {
			r.took(from, n)
			moved = true
		}
		switch {
		case err == nil && r.budget == 0:
			return moved, false // the relay's goroutine goes on
		case err == nil:
			continue
		case err == syscall.EAGAIN:
			return moved, false // the source reports more, or the Conn room
		case err == io.EOF:
			r.eof(from)
			r.passedFIN(from)
			return true, false
		case err == src.readErr:
			r.readEnded(from, err)
			return true, true
		default:
			r.writeFailed(from, err)
			return true, true
		}
	}
}

// moveDirectOut is move from the own engine's Conn to a kernel socket
// with no buffer of the relay's: the Conn hands its received data to the
// socket's write in place (stack.ReadToConn). The data right before the
// app's FIN is written with MSG_MORE and the FIN follows it, as in move.
func (r *evRelay) moveDirectOut(from Side, src *connEnd, dst *sockEnd, moved bool) (bool, bool) {
	for {
		dst.writeErr, dst.finSent = nil, false
		n, err := src.rt.TryReadTo(dst.writeFromFn)
		if n > 0 {
			r.took(from, n)
			moved = true
			dst.wrote()
		}
		switch {
		case err == nil && r.budget == 0:
			return moved, false // the relay's goroutine goes on
		case err == nil:
			continue
		case err == syscall.EAGAIN:
			return moved, false // the source reports more, or the socket room
		case err == io.EOF:
			r.eof(from)
			if !dst.finSent {
				if _, werr := dst.tryWrite(nil, true); werr != nil {
					r.writeFailed(from, werr)
					return true, true
				}
			}
			r.passedFIN(from)
			return true, false
		case err == dst.writeErr:
			r.writeFailed(from, err)
			return true, true
		default:
			r.readEnded(from, err)
			return true, true
		}
	}
}

// took records n bytes moved from from's side.
func (r *evRelay) took(from Side, n int) {
	r.wd.touch()
	r.count(from, n)
}

// passedFIN records from's FIN carried to the other side: that
// direction is done.
func (r *evRelay) passedFIN(from Side) {
	r.p.emit(Event{Flow: r.id, Kind: EventCloseWrite, Side: from.other()})
	r.done[from] = true
}

// release gives a direction's buffer back once it holds no data.
func (r *evRelay) release(pd *pending) {
	if pd.buf != nil && pd.off == pd.end {
		r.p.tcpBufs.put(pd.buf)
		pd.buf, pd.off, pd.end = nil, 0, 0
	}
}

func (r *evRelay) count(from Side, n int) {
	if r.budget > 0 {
		r.budget = max(0, r.budget-n)
	}
	r.e.count(from, n)
	if from == SideApp {
		r.p.stats.bytesUp.Add(uint64(n))
	} else {
		r.p.stats.bytesDown.Add(uint64(n))
	}
}

// eof records from's FIN, as tcpRelay.eof does.
func (r *evRelay) eof(from Side) {
	r.p.emit(Event{Flow: r.id, Kind: EventEOF, Side: from})
	r.finished++
	if r.finished == 1 {
		r.wd.setLimit(r.p.halfCloseLimit())
	}
}

// readEnded handles a read that ended with err other than the FIN: a
// reset is passed on as an abort, anything else aborts both sides.
func (r *evRelay) readEnded(from Side, err error) {
	to := from.other()
	if isReset(err) {
		r.countReset(from)
		r.abortSide(to)
		return
	}
	r.p.log.Debug("tcp read failed", "flow", r.id, "side", from, "err", err)
	r.abortSide(to)
	r.abortSide(from)
}

// writeFailed handles a failed write towards the other side of from, as
// tcpRelay.writeFailed does.
func (r *evRelay) writeFailed(from Side, err error) {
	to := from.other()
	if isReset(err) || errors.Is(err, syscall.EPIPE) {
		r.countReset(to)
	} else {
		r.p.log.Debug("tcp write failed", "flow", r.id, "side", to, "err", err)
	}
	r.abortSide(from)
	r.abortSide(to)
}

func (r *evRelay) countReset(side Side) {
	if r.reset[side] {
		return
	}
	r.reset[side] = true
	if side == SideApp {
		r.p.stats.resetsFromApp.Add(1)
	} else {
		r.p.stats.resetsFromUpstream.Add(1)
	}
	r.p.emit(Event{Flow: r.id, Kind: EventReset, Side: side})
}

func (r *evRelay) abortSide(side Side) {
	if r.aborted[side] {
		return
	}
	r.aborted[side] = true
	e := r.ends[side]
	e.unwatch(r)
	r.p.abort(r.id, side, e.conn())
}

// interrupted acts on an interrupt: both sides are aborted.
func (r *evRelay) interrupted(reason int32) {
	switch reason {
	case intrIdle, intrHalfClose:
		err := errIdleTimeout
		if reason == intrHalfClose {
			err = errHalfCloseTimeout
			r.p.stats.halfCloseTimeouts.Add(1)
		} else {
			r.p.stats.idleTimeouts.Add(1)
		}
		r.p.log.Debug("tcp relay timed out", "flow", r.id, "err", err)
		r.p.emit(Event{Flow: r.id, Kind: EventTimeout, Err: err})
	}
	r.abortSide(SideApp)
	r.abortSide(SideUpstream)
}

// finish closes what was not aborted, gives everything back and reports
// the relay's end, as tcpRelay's closeBoth does.
func (r *evRelay) finish() {
	r.wd.stop()
	for _, side := range [2]Side{SideApp, SideUpstream} {
		if !r.aborted[side] {
			e := r.ends[side]
			e.unwatch(r)
			e.conn().Close()
		}
		pd := &r.pend[side]
		pd.off, pd.end = 0, 0
		r.release(pd)
	}
	p := r.p
	p.conns.remove(r.e)
	up, down := r.e.up.Load(), r.e.down.Load()
	r.p.log.Debug("tcp relay closed", "flow", r.id, "up", up, "down", down,
		"aborted", r.aborted[SideApp] || r.aborted[SideUpstream])
	r.p.emit(Event{Flow: r.id, Kind: EventClose, Up: up, Down: down, Conn: r.e.id})
	p.stats.tcpActive.Add(-1)
	p.stats.tcpEvented.Add(-1)
	p.release()
	p.mu.Lock()
	delete(p.relays, r)
	p.mu.Unlock()
	p.flows.Done()
}

// connEnd is a stack Conn that does not block (the own engine's).
type connEnd struct {
	c  stack.NonblockingConn
	wf stack.WriteFromConn // c, when it takes data in place
	rt stack.ReadToConn    // c, when it hands data over in place
}

func (e *connEnd) tryRead(p []byte) (int, error) { return e.c.TryRead(p) }
func (e *connEnd) tryWrite(p []byte, fin bool) (int, error) {
	return e.c.TryWrite(p, fin)
}
func (e *connEnd) watch(r *evRelay) error {
	e.c.SetNotify(r.notify)
	if a, ok := e.c.(afterNotifier); ok {
		a.SetNotifyAfter(r.notifyInline)
	}
	return nil
}

func (e *connEnd) unwatch(*evRelay) {
	e.c.SetNotify(nil)
	if a, ok := e.c.(afterNotifier); ok {
		a.SetNotifyAfter(nil)
	}
}

// afterNotifier is a Conn that can also tell of readiness once its
// engine holds no lock, so that the relay runs on the engine's goroutine.
type afterNotifier interface{ SetNotifyAfter(fn func()) }

func (e *connEnd) conn() net.Conn { return e.c }

// sockEnd is a kernel TCP socket, used with non-blocking system calls
// through its RawConn, so that a Close elsewhere cannot pull the
// descriptor from under a call.
type sockEnd struct {
	c       net.Conn
	rc      syscall.RawConn
	pl      *poller
	fd      int      // for the poller only
	r       *evRelay // the relay its events schedule
	watched bool
	// readable is false from a read that found the socket empty until
	// the poller reports something to read (edge-triggered, so it
	// reports what arrives after that read): the relay's passes over
	// both directions do not ask an empty socket again, a system call
	// each. Set by the poller, cleared before each read.
	readable atomic.Bool
	// outWatched: the poller reports writability too (watchOut).
	outWatched bool

	// The arguments and results of doRead and doWrite, which readFn
	// and writeFn hold bound, so that a call allocates no closure.
	p               []byte
	more            bool // doWrite: MSG_MORE
	n               int
	err             error
	readFn, writeFn func(uintptr) bool
	// readIntoFn is readInto bound, for the Conn's TryWriteFrom;
	// readErr is its last error, to tell it from the Conn's.
	readIntoFn func([]byte) (int, error)
	readErr    error
	// writeFromFn is writeFrom bound, for the Conn's TryReadTo;
	// writeErr is its last error and finSent whether it sent the FIN.
	writeFromFn func([]byte, bool) (int, error)
	writeErr    error
	finSent     bool
}

// writeFrom is tryWrite, keeping its error in writeErr and noting a FIN
// sent with the data.
func (s *sockEnd) writeFrom(p []byte, last bool) (int, error) {
	n, err := s.tryWrite(p, last)
	s.writeErr = err
	if last && err == nil && n == len(p) {
		s.finSent = true
	}
	return n, err
}

// readInto is tryRead, keeping its error in readErr.
func (s *sockEnd) readInto(p []byte) (int, error) {
	n, err := s.tryRead(p)
	s.readErr = err
	return n, err
}

// tryRead reads until p is full or the socket has nothing more. A read
// that did not fill p is followed by another one, which finds the FIN
// when it is queued right behind the data (the first read then returns
// with io.EOF, so the FIN leaves with the data), or EAGAIN.
func (s *sockEnd) tryRead(p []byte) (int, error) {
	total := 0
	for total < len(p) {
		// Unwatched (no poller: tests of the endpoint alone), every read
		// is tried.
		if s.watched && !s.readable.Swap(false) {
			err := error(syscall.EAGAIN)
			if total > 0 {
				err = nil
			}
			return total, err
		}
		s.p = p[total:]
		if err := s.rc.Read(s.readFn); err != nil {
			s.readable.Store(true)
			return total, err
		}
		n, err := s.n, s.err
		if err != syscall.EAGAIN {
			// Data, the FIN or an error: the next read may find more.
			s.readable.Store(true)
		}
		switch {
		case err == syscall.EAGAIN:
			if total > 0 {
				return total, nil
			}
			return 0, err
		case err != nil:
			return total, err
		case n == 0:
			return total, io.EOF
		}
		total += n
	}
	return total, nil
}

// wrote marks the socket readable after data was written to it: the
// reply to a request often is there by the time the write returns (the
// peer's stack runs in the writer's softirq, a local server answers in
// microseconds), and the pass that wrote reads it at once instead of
// waiting for the poller to wake and a goroutine to start: on a
// request/response exchange that is the difference between ~130 and
// ~200 µs (gateway bench --tests latency).
func (s *sockEnd) wrote() { s.readable.Store(true) }

// testHookSocketRead, when set (by tests), is called for every read
// system call of a sockEnd.
var testHookSocketRead atomic.Pointer[func()]

func (s *sockEnd) doRead(fd uintptr) bool {
	if hook := testHookSocketRead.Load(); hook != nil {
		(*hook)()
	}
	for {
		n, err := unix.Read(int(fd), s.p)
		if err == unix.EINTR {
			continue
		}
		s.n, s.err = max(n, 0), err
		return true // never wait: EAGAIN goes back to the relay
	}
}

// tryWrite writes p; with fin, the last write carries MSG_MORE and the
// shutdown follows it, so that Linux appends the FIN to the still unsent
// tail of p (tcp_send_fin) and sends both on one segment: what TCP_CORK
// does in writeFIN, in two system calls instead of four. A FIN without
// data is the shutdown alone.
func (s *sockEnd) tryWrite(p []byte, fin bool) (int, error) {
	total := 0
	for total < len(p) {
		s.p, s.more = p[total:], fin
		if err := s.rc.Write(s.writeFn); err != nil {
			return total, err
		}
		if s.err != nil {
			if s.err == syscall.EAGAIN {
				s.watchOut()
				if total > 0 {
					return total, nil
				}
			}
			return total, s.err
		}
		total += s.n
	}
	if fin {
		var err error
		cerr := s.rc.Control(func(fd uintptr) { err = unix.Shutdown(int(fd), unix.SHUT_WR) })
		if err == nil {
			err = cerr
		}
		return total, err
	}
	return total, nil
}

func (s *sockEnd) doWrite(fd uintptr) bool {
	flags := unix.MSG_NOSIGNAL
	if s.more {
		flags |= unix.MSG_MORE
	}
	for {
		n, err := unix.SendmsgN(int(fd), s.p, nil, nil, flags)
		if err == unix.EINTR {
			continue
		}
		s.n, s.err = max(n, 0), err
		return true
	}
}

func (s *sockEnd) watch(r *evRelay) error {
	s.r = r
	// Watched from here: set before the ADD, which reports data already
	// queued (subscribe).
	s.watched = true
	if err := s.pl.subscribe(s); err != nil {
		s.watched = false
		return err
	}
	return nil
}

// watchOut has the poller report writability from now on, the first
// time a write finds the socket full. Failing that, the relay would wait
// for room it is never told of: the write reports the error instead.
func (s *sockEnd) watchOut() {
	if s.watched && !s.outWatched {
		if err := s.pl.watchOut(s.fd); err != nil {
			s.err = err
			return
		}
		s.outWatched = true
	}
}

func (s *sockEnd) unwatch(r *evRelay) {
	if s.watched {
		s.watched = false
		s.pl.forget(s)
	}
}

func (s *sockEnd) conn() net.Conn { return s.c }
