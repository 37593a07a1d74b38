package udp

import (
	"sync"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// smallPayload is the payload size the pooled small buffers hold: every
// datagram of a 1500-byte MTU fits, and most UDP traffic (DNS, QUIC,
// games, VoIP) stays below it.
const smallPayload = 2048

// maxHeaders is the most header bytes BuildUDP writes (IPv6 and UDP).
const maxHeaders = packet.IPv6HeaderLen + packet.UDPHeaderLen

// writeBuf is the buffer one Write builds its packet in, with the
// one-element slice of slices handed to the PacketWriter, so that a Write
// allocates nothing once the pool is warm.
type writeBuf struct {
	buf  []byte // stack.Headroom, then the packet
	bufs [1][]byte
}

// bufPools recycle the buffers of queued datagrams and of Writes, in two
// sizes: small ones for the common case, and for writes large ones that
// fit any datagram. Queued datagrams above smallPayload get a buffer of
// their exact size, left to the garbage collector.
type bufPools struct {
	datagrams  sync.Pool // *[]byte with capacity smallPayload
	smallWrite sync.Pool // *writeBuf for payloads up to smallPayload
	largeWrite sync.Pool // *writeBuf for any payload
}

// datagram returns a copy of payload.
func (p *bufPools) datagram(payload []byte) *[]byte {
	if len(payload) > smallPayload {
		b := append([]byte(nil), payload...)
		return &b
	}
	d, _ := p.datagrams.Get().(*[]byte)
	if d == nil {
		b := make([]byte, 0, smallPayload)
		d = &b
	}
	*d = append((*d)[:0], payload...)
	return d
}

func (p *bufPools) putDatagram(d *[]byte) {
	if cap(*d) == smallPayload {
		p.datagrams.Put(d)
	}
}

// getWrite returns a buffer for a packet with n bytes of payload.
func (p *bufPools) getWrite(n int) *writeBuf {
	pool, size := &p.smallWrite, stack.Headroom+maxHeaders+smallPayload
	if n > smallPayload {
		pool, size = &p.largeWrite, stack.Headroom+maxHeaders+maxPayload6
	}
	if wb, _ := pool.Get().(*writeBuf); wb != nil {
		return wb
	}
	return &writeBuf{buf: make([]byte, size)}
}

func (p *bufPools) putWrite(wb *writeBuf) {
	if len(wb.buf) > stack.Headroom+maxHeaders+smallPayload {
		p.largeWrite.Put(wb)
	} else {
		p.smallWrite.Put(wb)
	}
}
