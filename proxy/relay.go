package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tungate/tungate/stack"
)

// The reasons a relay's watchdog reports.
var (
	errIdleTimeout      = &timeoutError{msg: "proxy: idle timeout"}
	errHalfCloseTimeout = &timeoutError{msg: "proxy: half-close timeout"}
)

// tcpRelay copies one established flow both ways. Each direction runs in
// its own goroutine and ends on its own: on EOF (FIN) it half-closes the
// other side and leaves the opposite direction running; on a reset or
// any other failure it aborts the other side, which ends the opposite
// direction too. Timeouts and cancellation abort both sides.
type tcpRelay struct {
	p     *Proxy
	id    stack.FlowID
	conns [2]net.Conn // indexed by Side
	wd    *watchdog

	// mu serialises the asynchronous interrupts (timeouts, cancellation)
	// with the end of the relay, so none runs after relay returns.
	mu    sync.Mutex
	ended bool // guarded by mu

	aborted  [2]atomic.Bool // per Side: reset by the proxy
	reset    [2]atomic.Bool // per Side: reset by its peer
	finished atomic.Int32   // directions ended by EOF
	e        *connEntry     // listed in p.conns; counts the bytes

	// small is each direction's own buffer, see pipe.
	small [2][smallBufSize]byte
}

// smallBufSize is the buffer a direction reads with while its flow
// trickles: a request, a response, a keystroke. A read that fills it
// means a burst, which continues with a pooled tcpBufSize buffer until a
// read no longer fills it (the source is drained for now). A connection
// therefore holds no large buffer while its reads wait: with 32 KiB per
// direction held for good, the pages a one-byte exchange touched were the
// largest part of an idle relay's resident memory.
const smallBufSize = 512

// relay runs the flow until both directions have ended, then closes both
// connections (those not aborted are closed gracefully). When both can be
// served by events it hands the flow to an evRelay instead and returns
// detached at once. The flow's record e is listed while the relay runs.
func (p *Proxy) relay(ctx context.Context, e *connEntry, app stack.Conn, up net.Conn) (detached bool) {
	id := e.flow
	if p.startEvented(e, app, up) {
		return true
	}
	p.stats.tcpActive.Add(1)
	defer p.stats.tcpActive.Add(-1)
	r := &tcpRelay{p: p, id: id, conns: [2]net.Conn{SideApp: app, SideUpstream: up}}
	r.e = e
	e.abort = func() { r.interrupt(func() { r.abortBoth() }) }
	p.conns.add(r.e)
	defer p.conns.remove(r.e)
	r.wd = newWatchdog(p.clock, p.limits().idleTimeout, errIdleTimeout, r.timeout)
	stopCancel := context.AfterFunc(ctx, func() {
		r.interrupt(func() { r.abortBoth() })
	})
	var wg sync.WaitGroup
	wg.Go(func() { r.pipe(SideUpstream) })
	r.pipe(SideApp)
	wg.Wait()

	r.wd.stop()
	stopCancel()
	r.mu.Lock()
	r.ended = true
	r.mu.Unlock()
	r.closeBoth()
	return false
}

// pipe copies from side from to the other side until from's Read ends or
// a write fails. It reads with the direction's small buffer while the flow
// trickles and with a pooled large one during a burst (see smallBufSize).
func (r *tcpRelay) pipe(from Side) {
	to := from.other()
	src, dst := r.conns[from], r.conns[to]
	small := r.small[from][:]
	buf := small
	var big *[]byte
	defer func() {
		if big != nil {
			r.p.tcpBufs.put(big)
		}
	}()
	for {
		n, rerr := readData(src, buf)
		if n > 0 {
			r.wd.touch()
			if errors.Is(rerr, io.EOF) {
				// The FIN came with this data: both leave together.
				r.eof(from)
				_, closed, werr := writeFIN(dst, buf[:n])
				if werr != nil {
					r.writeFailed(from, werr)
					return
				}
				r.count(from, n)
				if closed {
					r.p.emit(Event{Flow: r.id, Kind: EventCloseWrite, Side: to})
				}
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				r.writeFailed(from, werr)
				return
			}
			r.count(from, n)
		}
		if rerr != nil {
			r.readEnded(from, rerr)
			return
		}
		switch {
		case big == nil && n == len(small): // a burst
			big = r.p.tcpBufs.get()
			buf = *big
		case big != nil && n < len(buf): // drained: wait without it
			r.p.tcpBufs.put(big)
			big, buf = nil, small
		}
	}
}

func (r *tcpRelay) count(from Side, n int) {
	r.e.count(from, n)
	if from == SideApp {
		r.p.stats.bytesUp.Add(uint64(n))
	} else {
		r.p.stats.bytesDown.Add(uint64(n))
	}
}

// readEnded handles the end of from's data: FIN is passed on as a
// half-close, anything else as an abort.
func (r *tcpRelay) readEnded(from Side, err error) {
	to := from.other()
	switch {
	case errors.Is(err, io.EOF):
		r.eof(from)
		r.closeWrite(to)
	case isReset(err):
		r.countReset(from)
		r.abortSide(to)
	default:
		// Our own abort of from (timeout, cancellation, the other
		// direction failing), which is expected, or a local error.
		if !r.aborted[from].Load() {
			r.p.log.Debug("tcp read failed", "flow", r.id, "side", from, "err", err)
		}
		r.abortSide(to)
	}
}

// eof records from's FIN: the relay enters its half-closed phase. The
// caller then passes the FIN on, before any later FIN can come back, so
// that whoever sees it sees the new limit in force.
func (r *tcpRelay) eof(from Side) {
	r.p.emit(Event{Flow: r.id, Kind: EventEOF, Side: from})
	if r.finished.Add(1) == 1 {
		r.wd.setLimit(r.p.halfCloseLimit())
	}
}

// writeFailed handles a failed write towards the other side of from: its
// peer is gone, so both sides are aborted.
func (r *tcpRelay) writeFailed(from Side, err error) {
	to := from.other()
	if isReset(err) || errors.Is(err, syscall.EPIPE) {
		r.countReset(to)
	} else {
		r.p.log.Debug("tcp write failed", "flow", r.id, "side", to, "err", err)
	}
	r.abortSide(from)
	r.abortSide(to)
}

// countReset records, once per side, that side's peer reset.
func (r *tcpRelay) countReset(side Side) {
	if !r.reset[side].CompareAndSwap(false, true) {
		return
	}
	if side == SideApp {
		r.p.stats.resetsFromApp.Add(1)
	} else {
		r.p.stats.resetsFromUpstream.Add(1)
	}
	r.p.emit(Event{Flow: r.id, Kind: EventReset, Side: side})
}

// closeWrite sends FIN to side. A connection without CloseWrite gets its
// FIN from the final Close instead, once the other direction is done.
func (r *tcpRelay) closeWrite(side Side) {
	cw, ok := r.conns[side].(interface{ CloseWrite() error })
	if !ok {
		return
	}
	if err := cw.CloseWrite(); err != nil {
		// The side is already reset or closed; the direction reading
		// from it finds out and tears the relay down.
		r.p.log.Debug("tcp close write", "flow", r.id, "side", side, "err", err)
		return
	}
	r.p.emit(Event{Flow: r.id, Kind: EventCloseWrite, Side: side})
}

// abortSide resets side once.
func (r *tcpRelay) abortSide(side Side) {
	if r.aborted[side].CompareAndSwap(false, true) {
		r.p.abort(r.id, side, r.conns[side])
	}
}

func (r *tcpRelay) abortBoth() {
	r.abortSide(SideApp)
	r.abortSide(SideUpstream)
}

// interrupt runs f unless the relay has ended.
func (r *tcpRelay) interrupt(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ended {
		f()
	}
}

// timeout is the watchdog's expiry: both sides are aborted.
func (r *tcpRelay) timeout(reason error) {
	r.interrupt(func() {
		if reason == errHalfCloseTimeout {
			r.p.stats.halfCloseTimeouts.Add(1)
		} else {
			r.p.stats.idleTimeouts.Add(1)
		}
		r.p.log.Debug("tcp relay timed out", "flow", r.id, "err", reason)
		r.p.emit(Event{Flow: r.id, Kind: EventTimeout, Err: reason})
		r.abortBoth()
	})
}

// closeBoth closes the sides not aborted, reporting the relay's end.
func (r *tcpRelay) closeBoth() {
	for _, side := range []Side{SideApp, SideUpstream} {
		if !r.aborted[side].Load() {
			r.conns[side].Close()
		}
	}
	up, down := r.e.up.Load(), r.e.down.Load()
	r.p.log.Debug("tcp relay closed", "flow", r.id, "up", up, "down", down,
		"aborted", r.aborted[SideApp].Load() || r.aborted[SideUpstream].Load())
	r.p.emit(Event{Flow: r.id, Kind: EventClose, Up: up, Down: down, Conn: r.e.id})
}

// halfCloseLimit is the inactivity limit once one direction has ended:
// the half-close timeout, unless the idle timeout is shorter.
func (p *Proxy) halfCloseLimit() (time.Duration, error) {
	l := p.limits()
	h, i := l.halfCloseTimeout, l.idleTimeout
	if h > 0 && (i == 0 || h < i) {
		return h, errHalfCloseTimeout
	}
	return i, errIdleTimeout
}
