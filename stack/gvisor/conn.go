package gvisor

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tungate/tungate/internal/deadline"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// endpointConn is the net.Conn over a gVisor endpoint shared by TCP and UDP
// flows. It is written here rather than taken from gVisor's gonet adapter
// because gonet flattens every tcpip.Error into an opaque string and reports
// io.EOF after Close; the contract needs errors.Is to work with
// syscall.ECONNRESET and net.ErrClosed.
type endpointConn struct {
	ep      tcpip.Endpoint
	wq      *waiter.Queue
	id      stack.FlowID
	network string   // "tcp" or "udp", for net.OpError
	local   net.Addr // id.Dst: the app addressed it, the stack answers from it
	remote  net.Addr // id.Src: the app
	stream  bool     // TCP: Write loops until all is queued; EOF on FIN
	release func()   // unregisters the conn from its Stack; called once on close

	readMu  sync.Mutex // serialises Read calls
	writeMu sync.Mutex // serialises Write calls so one Write is contiguous in the stream

	// epMu serialises calls into ep that can return (and so consume) the
	// connection's hard error with recording it in hardErr; otherwise a
	// concurrent Read could see gVisor's plain "closed" after a Write took
	// the reset, and report EOF for a reset connection.
	epMu    sync.Mutex
	hardErr error // guarded by epMu; first fatal error seen, sticky

	rd, wd *deadline.Deadline

	done      chan struct{} // closed by Close/Abort; unblocks Read and Write
	closeOnce sync.Once

	rdShut     chan struct{} // closed by CloseRead; unblocks Read
	rdShutOnce sync.Once
	wrShut     chan struct{} // closed by CloseWrite; unblocks Write
	wrShutOnce sync.Once
}

// init prepares a zero endpointConn; release may be nil.
func (c *endpointConn) init(ep tcpip.Endpoint, wq *waiter.Queue, id stack.FlowID, stream bool, release func()) {
	c.ep, c.wq, c.id, c.stream, c.release = ep, wq, id, stream, release
	c.rd, c.wd = deadline.New(nil), deadline.New(nil)
	c.done, c.rdShut, c.wrShut = make(chan struct{}), make(chan struct{}), make(chan struct{})
	if stream {
		c.network, c.local, c.remote = "tcp", tcpAddr(id.Dst), tcpAddr(id.Src)
	} else {
		c.network, c.local, c.remote = "udp", udpAddr(id.Dst), udpAddr(id.Src)
	}
}

// ID returns the flow: Src is the app, Dst the address it connected to.
func (c *endpointConn) ID() stack.FlowID { return c.id }

// LocalAddr is the destination the app addressed (ID().Dst).
func (c *endpointConn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the app's address (ID().Src).
func (c *endpointConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both deadlines; expired calls fail with an error for
// which errors.Is(err, os.ErrDeadlineExceeded) holds.
func (c *endpointConn) SetDeadline(t time.Time) error {
	c.rd.Set(t)
	c.wd.Set(t)
	return nil
}

// SetReadDeadline sets the deadline of pending and future Reads.
func (c *endpointConn) SetReadDeadline(t time.Time) error { c.rd.Set(t); return nil }

// SetWriteDeadline sets the deadline of pending and future Writes.
func (c *endpointConn) SetWriteDeadline(t time.Time) error { c.wd.Set(t); return nil }

// Read reads stream bytes (TCP) or one datagram, truncated to len(b) (UDP).
// Errors: io.EOF after the app's FIN (TCP), net.ErrClosed after Close or
// CloseRead, syscall.ECONNRESET after the app's reset, os.ErrDeadlineExceeded
// on timeout; all but io.EOF wrapped in *net.OpError.
func (c *endpointConn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if len(b) == 0 && c.stream {
		if err := c.readGate(); err != nil {
			return 0, c.opError("read", err)
		}
		return 0, nil
	}
	var notify <-chan struct{}
	for {
		if err := c.readGate(); err != nil {
			return 0, c.opError("read", err)
		}
		n, err, again := c.tryRead(b)
		if !again {
			return n, err
		}
		if notify == nil {
			// Register, then retry before sleeping: data may have
			// arrived in between.
			var entry waiter.Entry
			entry, notify = waiter.NewChannelEntry(waiter.ReadableEvents)
			c.wq.EventRegister(&entry)
			defer c.wq.EventUnregister(&entry)
			continue
		}
		select {
		case <-notify:
		case <-c.rd.Done():
		case <-c.done:
		case <-c.rdShut:
		}
	}
}

// readGate returns why a Read must not proceed, or nil.
func (c *endpointConn) readGate() error {
	switch {
	case isClosed(c.done), isClosed(c.rdShut):
		return net.ErrClosed
	case c.rd.Expired():
		return os.ErrDeadlineExceeded
	}
	return nil
}

// tryRead makes one non-blocking read; again reports that nothing was
// readable yet.
func (c *endpointConn) tryRead(b []byte) (n int, err error, again bool) {
	w := tcpip.SliceWriter(b)
	c.epMu.Lock()
	res, terr := c.ep.Read(&w, tcpip.ReadOptions{})
	err = c.recordLocked(terr)
	c.epMu.Unlock()
	switch terr.(type) {
	case nil:
		if c.stream && res.Count > 0 {
			c.ep.ModerateRecvBuf(res.Count)
		}
		return res.Count, nil, false
	case *tcpip.ErrWouldBlock:
		return 0, nil, true
	}
	if isClosed(c.done) || isClosed(c.rdShut) {
		err = net.ErrClosed
	} else if err == net.ErrClosed && c.stream {
		return 0, io.EOF, false
	}
	return 0, c.opError("read", err), false
}

// Write queues b (TCP: all of it, blocking while the send buffer is full;
// UDP: as one datagram). Errors: net.ErrClosed after Close or CloseWrite,
// syscall.ECONNRESET after the app's reset, os.ErrDeadlineExceeded on
// timeout, each wrapped in *net.OpError; n counts the bytes queued.
func (c *endpointConn) Write(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	var (
		notify <-chan struct{}
		n      int
	)
	for {
		if err := c.writeGate(); err != nil {
			return n, c.opError("write", err)
		}
		m, err, again := c.tryWrite(b[n:])
		n += m
		if err != nil {
			return n, err
		}
		if !again {
			if !c.stream || n == len(b) {
				return n, nil
			}
			continue // partial write: the rest may fit now
		}
		if notify == nil {
			var entry waiter.Entry
			entry, notify = waiter.NewChannelEntry(waiter.WritableEvents)
			c.wq.EventRegister(&entry)
			defer c.wq.EventUnregister(&entry)
			continue
		}
		select {
		case <-notify:
		case <-c.wd.Done():
		case <-c.done:
		case <-c.wrShut:
		}
	}
}

// writeGate returns why a Write must not proceed, or nil.
func (c *endpointConn) writeGate() error {
	switch {
	case isClosed(c.done), isClosed(c.wrShut):
		return net.ErrClosed
	case c.wd.Expired():
		return os.ErrDeadlineExceeded
	}
	return nil
}

// tryWrite makes one non-blocking write; again reports a full send buffer.
func (c *endpointConn) tryWrite(b []byte) (n int, err error, again bool) {
	var r bytes.Reader
	r.Reset(b)
	c.epMu.Lock()
	m, terr := c.ep.Write(&r, tcpip.WriteOptions{})
	err = c.recordLocked(terr)
	c.epMu.Unlock()
	switch terr.(type) {
	case nil:
		return int(m), nil, false
	case *tcpip.ErrWouldBlock:
		return int(m), nil, true
	}
	if isClosed(c.done) || isClosed(c.wrShut) {
		err = net.ErrClosed
	}
	return int(m), c.opError("write", err), false
}

// recordLocked translates terr and keeps the first fatal error so that it
// is reported again by every later call, the way gVisor (like Linux)
// reports a reset only once.
func (c *endpointConn) recordLocked(terr tcpip.Error) error {
	switch terr.(type) {
	case nil, *tcpip.ErrWouldBlock:
		return nil
	case *tcpip.ErrConnectionReset, *tcpip.ErrConnectionAborted, *tcpip.ErrAborted, *tcpip.ErrTimeout:
		if c.hardErr == nil {
			c.hardErr = translate(terr)
		}
	}
	if c.hardErr != nil {
		return c.hardErr
	}
	return translate(terr)
}

// Close releases the flow; for TCP it sends FIN after the data already
// written (or RST when unread data is pending, as Linux does). It
// unblocks pending Reads and Writes, which return net.ErrClosed. A second
// Close returns net.ErrClosed.
func (c *endpointConn) Close() error {
	if !c.closeEndpoint(nil) {
		return c.opError("close", net.ErrClosed)
	}
	return nil
}

// closeEndpoint closes the endpoint once, after prepare; it reports
// whether this call closed it.
func (c *endpointConn) closeEndpoint(prepare func()) bool {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.done)
		if prepare != nil {
			prepare()
		}
		c.ep.Close()
		if c.release != nil {
			c.release()
		}
	})
	return first
}

func (c *endpointConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.network, Source: c.local, Addr: c.remote, Err: err}
}

// tcpConn is an established TCP flow; it implements stack.Conn.
type tcpConn struct {
	endpointConn
}

var _ stack.StateConn = (*tcpConn)(nil)

// State returns the endpoint's state by its RFC 9293 name, as the own
// engine names it.
func (c *tcpConn) State() string {
	s := tcp.EndpointState(c.ep.State())
	switch s {
	case tcp.StateFinWait1:
		return "FIN-WAIT-1"
	case tcp.StateFinWait2:
		return "FIN-WAIT-2"
	case tcp.StateSynRecv:
		return "SYN-RECEIVED"
	case tcp.StateError:
		return "CLOSED"
	}
	return s.String()
}

// CloseRead shuts the receive side: pending and later Reads return
// net.ErrClosed; data the app still sends is acknowledged and dropped.
func (c *tcpConn) CloseRead() error {
	if isClosed(c.done) {
		return c.opError("close", net.ErrClosed)
	}
	c.rdShutOnce.Do(func() { close(c.rdShut) })
	if terr := c.ep.Shutdown(tcpip.ShutdownRead); terr != nil {
		return c.opError("close", translate(terr))
	}
	return nil
}

// CloseWrite sends FIN after all data written so far; Reads keep working
// and Writes return net.ErrClosed.
func (c *tcpConn) CloseWrite() error {
	if isClosed(c.done) {
		return c.opError("close", net.ErrClosed)
	}
	c.wrShutOnce.Do(func() { close(c.wrShut) })
	if terr := c.ep.Shutdown(tcpip.ShutdownWrite); terr != nil {
		return c.opError("close", translate(terr))
	}
	return nil
}

// Abort closes the connection with a RST to the app, discarding unsent
// data: SO_LINGER with a zero timeout, then close. Like Close it unblocks
// pending calls; after Close it returns net.ErrClosed.
func (c *tcpConn) Abort() error {
	linger := func() {
		c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	}
	if !c.closeEndpoint(linger) {
		return c.opError("abort", net.ErrClosed)
	}
	return nil
}

// udpConn is one UDP flow; it implements stack.PacketConn,
// stack.Refuser and stack.DatagramWriter.
type udpConn struct {
	endpointConn
	// s writes the packets gVisor's endpoint cannot: ICMP errors, and
	// datagrams from other sources than the flow's destination.
	s *Stack
}

var (
	_ stack.PacketConn     = (*udpConn)(nil)
	_ stack.Refuser        = (*udpConn)(nil)
	_ stack.DatagramWriter = (*udpConn)(nil)
)

// WriteFrom implements stack.DatagramWriter. gVisor's connected endpoint
// sends only from the flow's destination, so the datagram is built here
// and written to the link beside gVisor.
func (c *udpConn) WriteFrom(b []byte, src netip.AddrPort) (int, error) {
	if err := c.writeGate(); err != nil {
		return 0, c.opError("write", err)
	}
	if src == c.id.Dst {
		return c.Write(b)
	}
	if err := c.s.writeRaw(packet.IPv6HeaderLen+packet.UDPHeaderLen+len(b), func(buf []byte) (int, error) {
		return packet.BuildUDP(buf, packet.UDPHeader{Src: src, Dst: c.id.Src}, b)
	}); err != nil {
		return 0, c.opError("write", err)
	}
	return len(b), nil
}

// PortUnreachable implements stack.DatagramWriter.
func (c *udpConn) PortUnreachable(dst netip.AddrPort, payload []byte) error {
	if isClosed(c.done) {
		return c.opError("unreachable", net.ErrClosed)
	}
	if err := c.s.portUnreachable(stack.FlowID{Src: c.id.Src, Dst: dst}, payload); err != nil {
		return c.opError("unreachable", err)
	}
	c.s.udpUnreachable.Add(1)
	return nil
}

// Refuse implements stack.Refuser: the first datagram not yet read (the
// one the flow began with, when nothing was read) is answered with an
// ICMP port unreachable; then the flow is closed.
func (c *udpConn) Refuse() error {
	defer c.Close()
	if isClosed(c.done) {
		return nil
	}
	b := make([]byte, 64<<10)
	w := tcpip.SliceWriter(b)
	c.epMu.Lock()
	res, terr := c.ep.Read(&w, tcpip.ReadOptions{Peek: true})
	c.epMu.Unlock()
	if terr != nil {
		return nil // nothing queued: nothing to answer
	}
	if err := c.s.portUnreachable(c.id, b[:res.Count]); err != nil {
		return c.opError("refuse", err)
	}
	c.s.udpRefused.Add(1)
	return nil
}

// isClosed reports whether ch is closed, without blocking.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
