package conformance

import (
	"strconv"
	"sync"
	"time"

	"github.com/tungate/tungate/stack"
)

// blockedCall is a system call written with packetdrill's START...END
// time: issued at START on its own goroutine, it must return at END
// (within the tolerance) while the events after it run. As in
// packetdrill, at most one call blocks at a time.
type blockedCall struct {
	ev     *Event
	end    time.Duration // script time the call must return at
	done   chan struct{} // closed by the goroutine once the fields below are set
	cancel func()        // unblocks the goroutine; safe to call more than once

	ret   int64
	errno string
	conn  stack.Conn    // accept's connection
	err   error         // a script error (bad arguments)
	at    time.Duration // virtual time the call returned at
}

// startBlocking issues ev's call at its start time. Calls that cannot
// block on the engine (socket, bind, close, ...) run at once and are
// checked against the end time like any other.
func (r *runner) startBlocking(ev *Event, end time.Duration) {
	b := &blockedCall{ev: ev, end: end, done: make(chan struct{}), cancel: func() {}}
	r.blocked, r.poked = b, true
	finish := func() {
		b.at = r.h.elapsed()
		close(b.done)
	}
	c := ev.Call
	switch c.Name {
	case "accept":
		stop := make(chan struct{})
		b.cancel = sync.OnceFunc(func() { close(stop) })
		go func() {
			defer finish()
			b.conn = r.h.waitConn(stop)
			b.ret, b.errno = c.Ret, ""
			if b.conn == nil {
				b.ret, b.errno = -1, "EAGAIN"
			}
		}()
		return
	case "read", "recv", "recvfrom", "write", "send", "sendto":
		st, err := r.openFD(ev)
		if err != nil || st == nil {
			// No connection to block on: report EBADF (or the error) at
			// once, timed like a call that returned immediately.
			b.ret, b.errno, b.err = -1, "EBADF", err
			finish()
			return
		}
		read := c.Name == "read" || c.Name == "recv" || c.Name == "recvfrom"
		// Clear the deadline here, before the goroutine starts, so that
		// cancel (which sets it to the past) cannot be overtaken.
		if read {
			st.c.SetReadDeadline(time.Time{})
			b.cancel = func() { st.c.SetReadDeadline(time.Now()) }
		} else {
			st.c.SetWriteDeadline(time.Time{})
			b.cancel = func() { st.c.SetWriteDeadline(time.Now()) }
		}
		go func() {
			defer finish()
			b.ret, b.errno, b.err = r.connCall(ev, st, true)
		}()
		return
	}
	b.err = r.call(ev)
	b.ret, b.errno = c.Ret, c.Errno
	finish()
}

// openFD returns the open connection state named by a call's first
// argument, nil if there is none.
func (r *runner) openFD(ev *Event) (*fdState, error) {
	c := ev.Call
	if len(c.Args) == 0 {
		return nil, r.fail(ev, "%s without a descriptor", c.Name)
	}
	n, err := strconv.ParseInt(c.Args[0], 0, 64)
	if err != nil {
		return nil, r.fail(ev, "bad descriptor %q", c.Args[0])
	}
	if st := r.fds[n]; st != nil && !st.closed {
		return st, nil
	}
	return nil, nil
}

// collectBlocked checks the blocking call once it has returned. After
// an event that may have unblocked it (poked), it first waits up to
// realWait (real time) so the return is stamped with the virtual time
// of that event, not a later one; wait does so regardless.
func (r *runner) collectBlocked(wait bool) error {
	b := r.blocked
	if b == nil {
		return nil
	}
	if wait || r.poked {
		select {
		case <-b.done:
		case <-time.After(realWait):
		}
	}
	r.poked = false
	select {
	case <-b.done:
	default:
		return nil
	}
	r.blocked = nil
	if b.err != nil {
		return b.err
	}
	if b.conn != nil {
		r.fds[b.ev.Call.Ret] = &fdState{c: b.conn}
	}
	if err := r.checkReturn(b.ev, b.ret, b.errno); err != nil {
		return err
	}
	if b.at < b.end-r.tol || b.at > b.end+r.tol {
		return r.fail(b.ev, "%s returned at %s; want %s (±%s)", b.ev.Call.Name, fmtTime(b.at), fmtTime(b.end), r.tol)
	}
	return nil
}

// finishBlocked lets a call still blocked after the last event run to
// its end time and checks it.
func (r *runner) finishBlocked() error {
	b := r.blocked
	if b == nil {
		return nil
	}
	r.h.advanceTo(b.end+r.tol, func() bool {
		select {
		case <-b.done:
			return true
		default:
			return r.h.pending() > 0
		}
	})
	if err := r.collectBlocked(true); err != nil {
		return err
	}
	if r.blocked != nil {
		return r.fail(b.ev, "%s did not return by %s", b.ev.Call.Name, fmtTime(b.end+r.tol))
	}
	return nil
}

// stopBlocked cancels a call still blocked and waits for its goroutine.
func (r *runner) stopBlocked() {
	if b := r.blocked; b != nil {
		b.cancel()
		<-b.done
		if b.conn != nil {
			b.conn.Close()
		}
		r.blocked = nil
	}
}
