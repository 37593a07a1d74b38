package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// DialContext connects to the server itself, as the gateway's dialer for
// hijacked flows: with network "udp" each Write is one query and each Read
// one answer; with "tcp" the stream carries length-prefixed messages (RFC
// 1035 §4.2.2). address is only reported as the remote address. The conn
// is served until it is closed, as a socket would be, not only while the
// dial's ctx lasts.
func (s *Server) DialContext(_ context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "udp", "udp4", "udp6":
		return newPacketConn(s, address), nil
	case "tcp", "tcp4", "tcp6":
		app, srv := net.Pipe()
		go s.serveStream(srv)
		return app, nil
	}
	return nil, fmt.Errorf("dns: cannot serve network %q", network)
}

// serveStream answers the length-prefixed queries on c until it closes.
func (s *Server) serveStream(c net.Conn) {
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var hdr [2]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		out, err := s.Handle(ctx, q, true)
		if err != nil {
			s.log.Debug("dns: tcp query dropped", "err", err)
			return // a stream with garbage in it has lost its framing
		}
		msg := make([]byte, 2+len(out))
		binary.BigEndian.PutUint16(msg, uint16(len(out)))
		copy(msg[2:], out)
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}

// maxInflight is how many queries of one hijacked UDP flow are answered
// at once.
const maxInflight = 64

// packetConn is a hijacked UDP flow's upstream: queries written to it are
// answered, concurrently, and the answers read back, one per Read.
type packetConn struct {
	s      *Server
	remote string
	ctx    context.Context
	cancel context.CancelFunc

	answers chan []byte
	// inflight bounds the queries being answered at once; a flow that
	// sends more has the excess dropped, as a busy resolver would.
	inflight chan struct{}
	once     sync.Once
	closed   chan struct{}
	wg       sync.WaitGroup
}

func newPacketConn(s *Server, remote string) *packetConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &packetConn{s: s, remote: remote, ctx: ctx, cancel: cancel,
		answers: make(chan []byte, 16), inflight: make(chan struct{}, maxInflight), closed: make(chan struct{})}
}

// Write takes one query; its answer, if any, becomes readable later.
func (c *packetConn) Write(b []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	select {
	case c.inflight <- struct{}{}:
	default:
		c.s.busy.Add(1)
		return len(b), nil // dropped, as by a full socket buffer
	}
	q := append([]byte(nil), b...)
	c.wg.Go(func() {
		defer func() { <-c.inflight }()
		out, err := c.s.Handle(c.ctx, q, false)
		if err != nil {
			c.s.log.Debug("dns: query dropped", "err", err)
			return
		}
		select {
		case c.answers <- out:
		case <-c.closed:
		}
	})
	return len(b), nil
}

// Read returns the next answer; a short buffer truncates it, as a UDP
// socket would.
func (c *packetConn) Read(b []byte) (int, error) {
	select {
	case out := <-c.answers:
		return copy(b, out), nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

// Close ends the flow and waits for the queries being answered.
func (c *packetConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.cancel()
	})
	c.wg.Wait()
	return nil
}

// ReadFrom and WriteTo make the conn a net.PacketConn too, which is how
// Go's resolver tells a datagram conn (no length prefix) from a stream.
func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.Read(b)
	return n, c.RemoteAddr(), err
}

func (c *packetConn) WriteTo(b []byte, _ net.Addr) (int, error) { return c.Write(b) }

var _ net.PacketConn = (*packetConn)(nil)

type dnsAddr string

func (a dnsAddr) Network() string { return "udp" }
func (a dnsAddr) String() string  { return string(a) }

func (c *packetConn) LocalAddr() net.Addr  { return dnsAddr("gateway-dns") }
func (c *packetConn) RemoteAddr() net.Addr { return dnsAddr(c.remote) }

var errNoDeadline = errors.New("dns: deadlines are not supported on a hijacked flow")

func (c *packetConn) SetDeadline(time.Time) error      { return errNoDeadline }
func (c *packetConn) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (c *packetConn) SetWriteDeadline(time.Time) error { return errNoDeadline }
