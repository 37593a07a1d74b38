// Package stack defines the contract between the packet side of tungate (the
// TUN device), the userspace network stacks that terminate TCP and UDP (the
// own engine in stack/tcp, gVisor in stack/gvisor) and the proxy that relays
// each flow upstream. It holds interfaces and small value types only.
package stack

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Headroom is the number of bytes a PacketWriter's caller leaves free before
// each packet. The Linux TUN with offloads prepends a 10-byte virtio-net
// header; 16 keeps the IP header aligned.
const Headroom = 16

// FlowID names one transport flow as the app sees it: Src is the app's own
// address and port, Dst the address and port it connected (or sent) to.
type FlowID struct {
	Src netip.AddrPort
	Dst netip.AddrPort
}

func (f FlowID) String() string { return fmt.Sprintf("%s->%s", f.Src, f.Dst) }

// PacketWriter receives the IP packets a stack emits towards the app.
type PacketWriter interface {
	// WritePackets writes one IP packet per element: bufs[i][offset:] is the
	// packet and bufs[i][:offset] is headroom the writer may overwrite
	// (offset >= Headroom). The writer does not keep bufs after it returns
	// and the caller may reuse them, but their contents (and any spare
	// capacity beyond each slice's length, which the Linux TUN uses to
	// coalesce segments) are undefined afterwards: pass copies of anything
	// that must survive, such as data kept for retransmission. It returns
	// the number of packets written and the first error.
	WritePackets(bufs [][]byte, offset int) (int, error)
}

// OffloadWriter is a PacketWriter that also takes packets with their
// virtio-net header: TCP superpackets (one IP and TCP header for up to
// 64 KB of consecutive payload, cut into segments by the kernel) and
// partial checksums, written as they are.
type OffloadWriter interface {
	PacketWriter
	// Offloads reports whether WritePacketsOffload may be used. It does
	// not change.
	Offloads() bool
	// WritePacketsOffload is WritePackets for packets whose virtio-net
	// header (10 bytes, internal/virtio) is in the headroom just before
	// offset. The writer does not rewrite the packets.
	WritePacketsOffload(bufs [][]byte, offset int) (int, error)
}

// OffloadStack is a Stack that also takes the packets the TUN read with
// their virtio-net header, TCP superpackets whole.
type OffloadStack interface {
	Stack
	// DeliverInboundOffload is DeliverInbound for packets that each
	// start with their 10-byte virtio-net header (internal/virtio), the
	// IP packet after it. A packet the header marks as checksummed or
	// never checksummed (kernel-local) is not verified again; any other
	// is.
	DeliverInboundOffload(pkts [][]byte) error
}

// Stack is a userspace network stack fed with IP packets from the TUN.
type Stack interface {
	// DeliverInbound hands the stack IP packets read from the TUN, each
	// starting at its IP header. The stack copies what it keeps; the caller
	// may reuse pkts and their buffers as soon as it returns. Malformed
	// packets are dropped and counted, never returned as an error; the
	// error is reserved for a closed stack (net.ErrClosed).
	DeliverInbound(pkts [][]byte) error

	// Close aborts every connection, stops the stack's goroutines and waits
	// for them. Handlers still running see their Conns fail. Close is
	// idempotent.
	Close() error
}

// Handler decides what happens to each new flow. Stacks call its methods on
// a goroutine of their own per flow, which the handler may block for as long
// as the flow lives; Stack.Close cancels ctx.
type Handler interface {
	// HandleTCP is called once per new TCP flow, when the app's SYN arrives
	// and before it is answered. The handler must call exactly one of
	// req.Accept or req.Reject; a handler that returns without deciding
	// gets Reject(true) from the stack (a RST, logged as a warning). ctx
	// ends when the stack closes.
	HandleTCP(ctx context.Context, req Request)

	// HandleUDP is called once per new UDP flow (new 4-tuple), with the
	// first datagram already readable from conn. The handler owns conn and
	// must Close it.
	HandleUDP(ctx context.Context, conn PacketConn)
}

// Request is a TCP connection attempt whose SYN has not been answered yet.
// Repeated SYNs from the app while the request is pending are absorbed.
//
// Its methods are safe for concurrent use, and the first Accept or Reject
// decides: a later Accept fails with an error (the request is already
// decided) and a later Reject does nothing. ID may be called at any time.
type Request interface {
	// ID returns the flow the app asked for.
	ID() FlowID

	// Accept completes the handshake (SYN-ACK, then waits for the app's ACK
	// until ctx is done) and returns the established connection. It fails if
	// the app gave up meanwhile (RST, timeout) or the stack is closed, or
	// if the request was already decided.
	Accept(ctx context.Context) (Conn, error)

	// Reject refuses the flow: with reset the app receives a RST (its
	// connect fails with ECONNREFUSED); without, the SYN is dropped and the
	// app's own retransmissions and timeout apply. A stack that is closing
	// may leave the RST out. A Reject after the first decision does
	// nothing.
	Reject(reset bool)
}

// Conn is an established TCP connection terminated in the stack.
//
// Read returns io.EOF once the app's FIN has been received and all data
// before it read (the last data and io.EOF may come from one call, as
// io.Reader allows); an error wrapping syscall.ECONNRESET (so that
// errors.Is(err, syscall.ECONNRESET) holds) when the app reset the
// connection; net.ErrClosed after Close or
// CloseRead. Write returns net.ErrClosed after Close or CloseWrite and
// ECONNRESET after a reset. Close unblocks pending Read and Write calls.
type Conn interface {
	net.Conn

	// ID returns the flow this connection terminates.
	ID() FlowID

	// CloseRead shuts the receive side: pending and later Reads fail.
	CloseRead() error

	// CloseWrite sends FIN after all data written so far (half-close); the
	// receive side keeps working.
	CloseWrite() error

	// Abort closes the connection with a RST to the app, discarding any
	// unsent data, as SO_LINGER 0 does for a kernel socket.
	Abort() error
}

// StateConn is a Conn that reports its TCP state by its RFC 9293 name
// ("ESTABLISHED", "FIN-WAIT-2", "CLOSED"), for observers such as the
// connections API. Both stacks' Conns implement it; State is safe to call
// at any time, concurrently with everything else.
type StateConn interface {
	Conn
	State() string
}

// NonblockingConn is a Conn that can be served without a goroutine
// blocked on it: TryRead and TryWrite return syscall.EAGAIN where Read and
// Write would wait, and SetNotify's function runs whenever that may have
// changed. A relay of many mostly idle connections then needs no
// goroutine per connection. The own engine's Conns implement it.
type NonblockingConn interface {
	Conn

	// TryRead is Read without waiting; at the end of the stream it
	// returns the last data with io.EOF where it can, as Read does.
	TryRead(p []byte) (int, error)

	// TryWrite writes what fits now and returns the count; with fin, the
	// FIN follows once all of p is written, on its last segment. It
	// returns 0, syscall.EAGAIN when nothing fits.
	TryWrite(p []byte, fin bool) (int, error)

	// SetNotify registers fn, called whenever the Conn may have become
	// readable or writable or has failed. fn runs on the stack's own
	// goroutines and must neither block nor call into the Conn.
	SetNotify(fn func())
}

// WriteFromConn is a NonblockingConn whose send buffer a relay can fill
// in place, with no copy of its own: TryWriteFrom calls read with free
// buffer space (under the Conn's lock: read must not block or call the
// Conn) and takes what it filled; read's io.EOF queues the FIN behind that
// data. It returns read's count and error, 0 and syscall.EAGAIN when the
// buffer is full (read not called), or the Conn's own error, a
// *net.OpError, when the Conn takes no data.
type WriteFromConn interface {
	NonblockingConn
	TryWriteFrom(read func(p []byte) (int, error)) (int, error)
}

// ReadToConn is a NonblockingConn whose received data a relay can pass
// on from its buffer in place: TryReadTo calls write with a run of the
// buffered data (under the Conn's lock: write must not block or call the
// Conn), last set when the run is all the data before the peer's FIN, and
// consumes what write took. It returns that count with write's error, or
// with io.EOF once everything before the FIN is taken; 0 and
// syscall.EAGAIN when nothing is buffered (write not called); else the
// error TryRead would return.
type ReadToConn interface {
	NonblockingConn
	TryReadTo(write func(p []byte, last bool) (int, error)) (int, error)
}

// Refuser is implemented by PacketConns that can refuse their flow as a
// host with no socket on the port does: an ICMP port unreachable quoting
// the first datagram (RFC 1122 §4.1.3.1), so a connected UDP socket of the
// app fails with ECONNREFUSED. Refuse also closes the conn.
type Refuser interface {
	Refuse() error
}

// DatagramWriter is implemented by PacketConns that can send their app
// what hosts other than the flow's destination would: the pieces of an
// endpoint-independent NAT (RFC 4787 §4.1, §5), whose one upstream socket
// per app socket hears from every remote.
type DatagramWriter interface {
	// WriteFrom sends b to the app (ID().Src) as one datagram from src,
	// which need not be ID().Dst. It fails as Write does.
	WriteFrom(b []byte, src netip.AddrPort) (int, error)
	// PortUnreachable sends the app an ICMP (v4 or v6) port unreachable
	// from dst, quoting a datagram of the app to dst that carried payload
	// (a prefix is enough: the app's kernel matches the quoted addresses
	// and ports), so that the app's socket connected to dst fails with
	// ECONNREFUSED (RFC 1122 §4.1.3.3). The flow stays open.
	PortUnreachable(dst netip.AddrPort, payload []byte) error
}

// PacketConn is one UDP flow terminated in the stack. Each Read returns one
// datagram the app sent (a short buffer truncates it); each Write sends one
// datagram back to the app from ID().Dst to ID().Src.
type PacketConn interface {
	net.Conn

	// ID returns the flow (app address, destination address).
	ID() FlowID
}
