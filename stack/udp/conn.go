package udp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/tungate/tungate/internal/deadline"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// Largest payloads that fit one packet: the IPv4 total length and the
// IPv6 payload length (which, with the UDP length, excludes the fixed
// header) are 16-bit fields.
const (
	maxPayload4 = packet.IPv4MaxTotalLen - packet.IPv4MinHeaderLen - packet.UDPHeaderLen
	maxPayload6 = packet.IPv6MaxPayloadLen - packet.UDPHeaderLen
)

// PacketConn is one UDP flow of a Table; it implements stack.PacketConn.
// LocalAddr is the destination the app sent to (ID().Dst) and RemoteAddr
// the app (ID().Src), both *net.UDPAddr.
//
// Read returns one queued datagram per call, truncated to len(b) as a UDP
// socket truncates it. Write sends b as one datagram from ID().Dst to
// ID().Src; it does not keep b. Both honour their deadlines (failing with
// an error that wraps os.ErrDeadlineExceeded and whose Timeout() is true)
// and fail with net.ErrClosed once the flow is closed. Errors are
// *net.OpError values. All methods are safe for concurrent use.
type PacketConn struct {
	t          *Table
	id         stack.FlowID
	local      *net.UDPAddr
	remote     *net.UDPAddr
	maxPayload int

	// mu guards the fields below.
	mu     sync.Mutex
	ring   []*[]byte // queued datagrams, ring[head] first; grows up to the Table's queueLen
	head   int
	n      int
	closed bool
	warned bool // the first queue drop has been logged

	ready     chan struct{} // one token while datagrams may be queued
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	rdl, wdl  *deadline.Deadline
}

var (
	_ stack.PacketConn     = (*PacketConn)(nil)
	_ stack.Refuser        = (*PacketConn)(nil)
	_ stack.DatagramWriter = (*PacketConn)(nil)
)

func newPacketConn(t *Table, id stack.FlowID) *PacketConn {
	c := &PacketConn{
		t:          t,
		id:         id,
		local:      net.UDPAddrFromAddrPort(id.Dst),
		remote:     net.UDPAddrFromAddrPort(id.Src),
		maxPayload: maxPayload6,
		ready:      make(chan struct{}, 1),
		done:       make(chan struct{}),
		rdl:        deadline.New(t.clk),
		wdl:        deadline.New(t.clk),
	}
	if id.Src.Addr().Is4() {
		c.maxPayload = maxPayload4
	}
	return c
}

// push queues a copy of payload for Read, or drops and counts it.
func (c *PacketConn) push(payload []byte) {
	d := c.t.bufs.datagram(payload)
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		c.t.bufs.putDatagram(d)
		c.t.stats.closedDrops.Add(1)
		return
	case c.n == c.t.queueLen:
		// The handler reads slower than the app sends. Dropping the newest
		// datagram is what a kernel socket with a full receive buffer does
		// (counted there as UDP RcvbufErrors); the app's own loss recovery
		// applies, and the drop is counted in Stats.QueueDrops.
		first := !c.warned
		c.warned = true
		c.mu.Unlock()
		c.t.bufs.putDatagram(d)
		c.t.stats.queueDrops.Add(1)
		if first {
			c.t.log.Debug("udp: flow queue full, dropping datagrams", "flow", c.id, "queue_len", c.t.queueLen)
		}
		return
	}
	c.pushLocked(d)
	c.mu.Unlock()
	c.t.stats.datagramsIn.Add(1)
	c.t.stats.bytesIn.Add(uint64(len(payload)))
	signal(c.ready)
}

func (c *PacketConn) pushLocked(d *[]byte) {
	if c.n == len(c.ring) {
		grown := make([]*[]byte, min(max(2*len(c.ring), 8), c.t.queueLen))
		for i := range c.n {
			grown[i] = c.ring[(c.head+i)%len(c.ring)]
		}
		c.ring, c.head = grown, 0
	}
	c.ring[(c.head+c.n)%len(c.ring)] = d
	c.n++
}

func (c *PacketConn) popLocked() *[]byte {
	d := c.ring[c.head]
	c.ring[c.head] = nil
	c.head = (c.head + 1) % len(c.ring)
	c.n--
	return d
}

// Read implements net.Conn.Read: it waits for the next datagram and copies
// it into b, discarding what does not fit.
func (c *PacketConn) Read(b []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, c.opError("read", net.ErrClosed)
		}
		if c.rdl.Expired() {
			c.mu.Unlock()
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		if c.n > 0 {
			d := c.popLocked()
			more := c.n > 0
			c.mu.Unlock()
			if more {
				signal(c.ready) // for a concurrent reader
			}
			n := copy(b, *d)
			c.t.bufs.putDatagram(d)
			return n, nil
		}
		c.mu.Unlock()
		select {
		case <-c.ready:
		case <-c.done:
		case <-c.rdl.Done():
		}
	}
}

// Write implements net.Conn.Write: it builds one IPv4 or IPv6 UDP packet
// carrying b from ID().Dst to ID().Src and hands it to the Table's
// PacketWriter. A b larger than one packet can carry (65507 bytes over
// IPv4, 65527 over IPv6) fails with an error wrapping syscall.EMSGSIZE,
// as a kernel socket's send does; nothing is sent.
func (c *PacketConn) Write(b []byte) (int, error) {
	return c.write("write", b, c.id.Dst)
}

// WriteFrom implements stack.DatagramWriter: Write with src in place of
// ID().Dst as the datagram's source. A src of the other address family
// than the app's fails with packet.ErrAddress (wrapped).
func (c *PacketConn) WriteFrom(b []byte, src netip.AddrPort) (int, error) {
	return c.write("write", b, src)
}

func (c *PacketConn) write(op string, b []byte, src netip.AddrPort) (int, error) {
	if isClosed(c.done) {
		return 0, c.opError(op, net.ErrClosed)
	}
	if c.wdl.Expired() {
		return 0, c.opError(op, os.ErrDeadlineExceeded)
	}
	if len(b) > c.maxPayload {
		return 0, c.opError(op, fmt.Errorf("%d-byte datagram, at most %d fit: %w", len(b), c.maxPayload, syscall.EMSGSIZE))
	}
	err := c.writePacket(len(b), func(buf []byte) (int, error) {
		return packet.BuildUDP(buf, packet.UDPHeader{Src: src, Dst: c.id.Src}, b)
	})
	if err != nil {
		return 0, c.opError(op, err)
	}
	c.t.stats.datagramsOut.Add(1)
	c.t.stats.bytesOut.Add(uint64(len(b)))
	return len(b), nil
}

// writePacket builds one packet of at most size bytes past the IP and
// transport headers with build and hands it to the Table's PacketWriter.
func (c *PacketConn) writePacket(size int, build func(b []byte) (int, error)) error {
	wb := c.t.bufs.getWrite(size)
	defer c.t.bufs.putWrite(wb)
	n, err := build(wb.buf[stack.Headroom:])
	if err != nil {
		c.t.stats.writeErrors.Add(1)
		return err
	}
	wb.bufs[0] = wb.buf[:stack.Headroom+n]
	_, err = c.t.w.WritePackets(wb.bufs[:], stack.Headroom)
	wb.bufs[0] = nil
	if err != nil {
		c.t.stats.writeErrors.Add(1)
	}
	return err
}

// PortUnreachable implements stack.DatagramWriter.
func (c *PacketConn) PortUnreachable(dst netip.AddrPort, payload []byte) error {
	if isClosed(c.done) {
		return c.opError("unreachable", net.ErrClosed)
	}
	err := c.writePacket(1280, func(buf []byte) (int, error) { // an ICMP error is at most the IPv6 minimum MTU
		return packet.BuildUDPPortUnreachable(buf, c.id.Src, dst, payload)
	})
	if err != nil {
		return c.opError("unreachable", err)
	}
	c.t.stats.unreachable.Add(1)
	return nil
}

// Refuse implements stack.Refuser: it answers the first datagram still
// queued (the one the flow began with, when nothing was read yet) with an
// ICMP port unreachable from ID().Dst, then closes the flow. Without a
// queued datagram it only closes.
func (c *PacketConn) Refuse() error {
	c.mu.Lock()
	var first []byte
	if c.n > 0 {
		first = append(first, *c.ring[c.head]...)
	}
	c.mu.Unlock()
	defer c.Close()
	if first == nil || isClosed(c.done) {
		return nil
	}
	err := c.writePacket(1280, func(buf []byte) (int, error) {
		return packet.BuildUDPPortUnreachable(buf, c.id.Src, c.id.Dst, first)
	})
	if err != nil {
		return c.opError("refuse", err)
	}
	c.t.stats.refused.Add(1)
	return nil
}

// Close ends the flow: it takes it out of the Table (a later datagram on
// its 4-tuple starts a new flow), discards the datagrams not yet read
// (counted in Stats.ClosedDrops) and unblocks pending Reads, which fail
// with net.ErrClosed. It is idempotent and returns nil.
func (c *PacketConn) Close() error {
	c.closeOnce.Do(func() {
		c.t.remove(c)
		c.mu.Lock()
		c.closed = true
		dropped := c.n
		for c.n > 0 {
			c.t.bufs.putDatagram(c.popLocked())
		}
		c.ring = nil
		c.mu.Unlock()
		close(c.done)
		c.rdl.Stop()
		c.wdl.Stop()
		c.t.stats.closedDrops.Add(uint64(dropped))
		c.t.stats.active.Add(-1)
		c.t.log.Debug("udp: flow closed", "flow", c.id, "unread", dropped)
	})
	return nil
}

// ID implements stack.PacketConn.
func (c *PacketConn) ID() stack.FlowID { return c.id }

// LocalAddr returns ID().Dst, the address the app sent to.
func (c *PacketConn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns ID().Src, the app's address.
func (c *PacketConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *PacketConn) SetDeadline(t time.Time) error {
	c.rdl.Set(t)
	c.wdl.Set(t)
	return nil
}

// SetReadDeadline sets the deadline of pending and later Reads; the zero
// time removes it.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.rdl.Set(t)
	return nil
}

// SetWriteDeadline sets the deadline of later Writes; the zero time
// removes it. Write does not block on a full queue (the PacketWriter
// decides), so the deadline is checked when Write starts.
func (c *PacketConn) SetWriteDeadline(t time.Time) error {
	c.wdl.Set(t)
	return nil
}

func (c *PacketConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.local, Addr: c.remote, Err: err}
}

// signal leaves a token in ch unless one is there already.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
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
