// Package proxytest provides test doubles for the boundary between a stack
// and its handler: a stack.Request and stack.Conn backed by a real
// loopback TCP connection and a stack.PacketConn backed by a loopback UDP
// socket pair (the manual clock is internal/clock's). Because the
// connections are kernel
// sockets, half-close, RST and ECONNRESET behave as the kernel makes
// them, which is what a stack's Conn imitates.
package proxytest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tungate/tungate/stack"
)

// Conn is a stack.Conn on the stack side of a loopback TCP connection.
// Read returns io.EOF after the app's FIN and an error satisfying
// errors.Is(err, syscall.ECONNRESET) after its RST, like a stack's Conn;
// unlike one, Read after CloseRead returns io.EOF, not net.ErrClosed.
type Conn struct {
	*net.TCPConn
	id      stack.FlowID
	closed  atomic.Bool
	aborted atomic.Bool
}

var _ stack.Conn = (*Conn)(nil)

// ID returns the flow given to NewConnPair.
func (c *Conn) ID() stack.FlowID { return c.id }

// KernelSocket returns the socket underneath: Conn adds nothing to its
// reads and writes, so the proxy may serve it with system calls of its
// own, as it does the own engine's Conns without a goroutine blocked on
// them, while Close and Abort still go through Conn.
func (c *Conn) KernelSocket() *net.TCPConn { return c.TCPConn }

// Abort resets the connection: SO_LINGER 0, then Close.
func (c *Conn) Abort() error {
	c.aborted.Store(true)
	c.SetLinger(0)
	return c.Close()
}

// Close closes the connection and records that it was called.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.TCPConn.Close()
}

// Closed reports whether Close or Abort was called.
func (c *Conn) Closed() bool { return c.closed.Load() }

// Aborted reports whether Abort was called.
func (c *Conn) Aborted() bool { return c.aborted.Load() }

// NewConnPair returns the two ends of a fresh loopback TCP connection:
// the stack's Conn, with ID id, and the app's end. Both are closed when
// the test ends.
func NewConnPair(tb testing.TB, id stack.FlowID) (*Conn, *net.TCPConn) {
	tb.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatalf("proxytest: listen: %v", err)
	}
	defer ln.Close()
	app, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatalf("proxytest: dial: %v", err)
	}
	st, err := ln.AcceptTCP()
	if err != nil {
		app.Close()
		tb.Fatalf("proxytest: accept: %v", err)
	}
	tb.Cleanup(func() {
		app.Close()
		st.Close()
	})
	return &Conn{TCPConn: st, id: id}, app
}

// Decision records what a handler did with a Request.
type Decision struct {
	// Accepted is true once Accept returned a Conn.
	Accepted bool
	// Rejected and Reset record a Reject call and its argument.
	Rejected, Reset bool
	// Calls counts Accept and Reject calls; a handler must make exactly
	// one.
	Calls int
	// At is when the first call was made (time.Now).
	At time.Time
}

// Request is a stack.Request for tests. Accept, unless told to fail,
// returns the stack side of a new loopback TCP connection whose app side
// is App.
type Request struct {
	tb testing.TB
	id stack.FlowID

	mu        sync.Mutex // guards the fields below
	acceptErr error
	decision  Decision
	app       *net.TCPConn
	conn      *Conn
	decided   chan struct{} // closed at the first call
}

var _ stack.Request = (*Request)(nil)

// NewRequest returns a pending Request for flow id.
func NewRequest(t testing.TB, id stack.FlowID) *Request {
	return &Request{tb: t, id: id, decided: make(chan struct{})}
}

// FailAccept makes later Accept calls fail with err, as when the app
// reset or gave up before its handshake completed.
func (r *Request) FailAccept(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.acceptErr = err
}

// ID returns the flow given to NewRequest.
func (r *Request) ID() stack.FlowID { return r.id }

// Accept records the call and returns a Conn whose peer is App, or the
// error set with FailAccept. It fails when ctx is already done.
func (r *Request) Accept(ctx context.Context) (stack.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recordLocked()
	if r.acceptErr != nil {
		return nil, r.acceptErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if r.decision.Calls > 1 {
		return nil, errors.New("proxytest: request already decided")
	}
	conn, app := NewConnPair(r.tb, r.id)
	r.app, r.conn = app, conn
	r.decision.Accepted = true
	return conn, nil
}

// Reject records the call.
func (r *Request) Reject(reset bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recordLocked()
	r.decision.Rejected = true
	r.decision.Reset = reset
}

func (r *Request) recordLocked() {
	r.decision.Calls++
	if r.decision.Calls == 1 {
		r.decision.At = time.Now()
		close(r.decided)
	}
}

// Decided is closed when Accept or Reject is first called.
func (r *Request) Decided() <-chan struct{} { return r.decided }

// Decision returns what was done with the request so far.
func (r *Request) Decision() Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.decision
}

// App returns the app's end of the accepted connection, nil before a
// successful Accept.
func (r *Request) App() *net.TCPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.app
}

// Conn returns the stack's end of the accepted connection, nil before a
// successful Accept.
func (r *Request) Conn() *Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn
}

// PacketConn is a stack.PacketConn on one of two connected loopback UDP
// sockets; the test plays the app on the other.
type PacketConn struct {
	*net.UDPConn
	id      stack.FlowID
	refused atomic.Bool
	froms   chan Datagram
	unreach chan netip.AddrPort
}

var (
	_ stack.PacketConn     = (*PacketConn)(nil)
	_ stack.Refuser        = (*PacketConn)(nil)
	_ stack.DatagramWriter = (*PacketConn)(nil)
)

// Datagram is one datagram WriteFrom sent the app from a source other
// than the flow's destination.
type Datagram struct {
	From    netip.AddrPort
	Payload []byte
}

// WriteFrom implements stack.DatagramWriter. A datagram from ID().Dst is
// written to the app's socket as Write does; one from another source
// (which a loopback socket cannot fake) is recorded for Froms instead.
func (c *PacketConn) WriteFrom(b []byte, src netip.AddrPort) (int, error) {
	if src == c.id.Dst {
		return c.Write(b)
	}
	select {
	case c.froms <- Datagram{From: src, Payload: append([]byte(nil), b...)}:
		return len(b), nil
	default:
		return 0, errors.New("proxytest: WriteFrom: 64 datagrams not taken from Froms")
	}
}

// Froms delivers the datagrams WriteFrom recorded.
func (c *PacketConn) Froms() <-chan Datagram { return c.froms }

// PortUnreachable implements stack.DatagramWriter: it records dst for
// Unreachable.
func (c *PacketConn) PortUnreachable(dst netip.AddrPort, _ []byte) error {
	select {
	case c.unreach <- dst:
		return nil
	default:
		return errors.New("proxytest: PortUnreachable: 64 not taken from Unreachable")
	}
}

// Unreachable delivers the destinations PortUnreachable was called with.
func (c *PacketConn) Unreachable() <-chan netip.AddrPort { return c.unreach }

// Refuse implements stack.Refuser: it records the call (Refused) and
// closes the conn; no ICMP is sent.
func (c *PacketConn) Refuse() error {
	c.refused.Store(true)
	return c.Close()
}

// Refused reports whether Refuse was called.
func (c *PacketConn) Refused() bool { return c.refused.Load() }

// ID returns the flow given to NewPacketConnPair.
func (c *PacketConn) ID() stack.FlowID { return c.id }

// NewPacketConnPair returns two UDP sockets on 127.0.0.1 connected to
// each other: the stack's PacketConn, with ID id, and the app's end, on
// which Read and Write work (RemoteAddr is nil). Both are closed when the
// test ends.
func NewPacketConnPair(t testing.TB, id stack.FlowID) (*PacketConn, *net.UDPConn) {
	t.Helper()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	app, err := net.ListenUDP("udp", lo)
	if err != nil {
		t.Fatalf("proxytest: listen udp: %v", err)
	}
	st, err := net.DialUDP("udp", lo, app.LocalAddr().(*net.UDPAddr))
	if err != nil {
		app.Close()
		t.Fatalf("proxytest: dial udp: %v", err)
	}
	t.Cleanup(func() {
		app.Close()
		st.Close()
	})
	if err := connectUDP(app, st.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatalf("proxytest: %v", err)
	}
	return &PacketConn{UDPConn: st, id: id, froms: make(chan Datagram, 64), unreach: make(chan netip.AddrPort, 64)}, app
}

// connectUDP connects the bound socket c to peer, so that it receives
// only peer's datagrams and can Write without an address.
func connectUDP(c *net.UDPConn, peer *net.UDPAddr) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("connect udp: %w", err)
	}
	sa := &unix.SockaddrInet4{Port: peer.Port}
	copy(sa.Addr[:], peer.IP.To4())
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return fmt.Errorf("connect udp: %w", err)
	}
	if cerr != nil {
		return fmt.Errorf("connect udp to %v: %w", peer, cerr)
	}
	return nil
}
