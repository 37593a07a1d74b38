package gvisor

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tungate/tungate/stack"
)

// linkEndpoint is the stack's only NIC: a point-to-point IP link with no
// link header, no neighbour resolution and no offloads. Emitted packets
// are copied, behind stack.Headroom bytes, into pooled buffers and handed
// to the PacketWriter synchronously on the emitting goroutine; that keeps
// the write path free of queues and goroutines, and the TUN write
// back-pressures gVisor directly. It does not implement GSO, so gVisor
// segments to the MTU itself and every packet fits the TUN.
type linkEndpoint struct {
	w   stack.PacketWriter
	mtu atomic.Uint32

	dmu        sync.RWMutex // guards dispatcher
	dispatcher gvstack.NetworkDispatcher

	// wmu guards closed. Writers hold it shared for the whole
	// PacketWriter call so that Close, taking it exclusively, guarantees
	// that no write is in progress or starts afterwards. It is separate
	// from dmu so that a PacketWriter feeding packets straight back into
	// this stack cannot deadlock against a pending Close.
	wmu    sync.RWMutex
	closed bool

	bufs sync.Pool // *outBatch

	packetsOut  atomic.Uint64
	writeErrors atomic.Uint64
	onError     func(error) // logs a failed PacketWriter call
}

var _ gvstack.LinkEndpoint = (*linkEndpoint)(nil)

// outBatch is the reusable storage for one WritePackets call.
type outBatch struct {
	bufs [][]byte // packets handed to the PacketWriter
	mem  [][]byte // backing buffers, kept across uses
}

func newLinkEndpoint(w stack.PacketWriter, mtu int, onError func(error)) *linkEndpoint {
	e := &linkEndpoint{w: w, onError: onError}
	e.mtu.Store(uint32(mtu))
	e.bufs.New = func() any { return new(outBatch) }
	return e
}

// deliver injects one inbound packet; it reports false when the endpoint
// is not attached (being removed or closed).
func (e *linkEndpoint) deliver(proto tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) bool {
	e.dmu.RLock()
	d := e.dispatcher
	e.dmu.RUnlock()
	if d == nil {
		return false
	}
	d.DeliverNetworkPacket(proto, pkt)
	return true
}

// WritePackets copies pkts into headroom-prefixed buffers and writes them
// as one batch. gVisor keeps ownership of pkts.
func (e *linkEndpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	b := e.bufs.Get().(*outBatch)
	defer e.bufs.Put(b)
	b.bufs = b.bufs[:0]
	for i, pkt := range list {
		buf := b.buffer(i, stack.Headroom+pkt.Size())
		copyPacket(buf[stack.Headroom:], pkt)
		b.bufs = append(b.bufs, buf)
	}
	return e.write(b.bufs)
}

// write hands packets to the PacketWriter; each buffer starts with
// stack.Headroom free bytes. The adapter's own packets (echo replies) also
// go through it.
func (e *linkEndpoint) write(bufs [][]byte) (int, tcpip.Error) {
	e.wmu.RLock()
	defer e.wmu.RUnlock()
	if e.closed {
		return 0, &tcpip.ErrClosedForSend{}
	}
	n, err := e.w.WritePackets(bufs, stack.Headroom)
	e.packetsOut.Add(uint64(n))
	if err != nil {
		e.writeErrors.Add(uint64(len(bufs) - n))
		e.onError(err)
		// gVisor treats this like a full device queue: TCP retransmits.
		return n, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

// buffer returns the i-th backing buffer resized to size, growing it (to
// at least the MTU, so that steady traffic reuses it) when too small.
func (b *outBatch) buffer(i, size int) []byte {
	if i == len(b.mem) {
		b.mem = append(b.mem, nil)
	}
	if cap(b.mem[i]) < size {
		b.mem[i] = make([]byte, max(size, stack.Headroom+DefaultMTU))
	}
	return b.mem[i][:size]
}

// copyPacket copies the whole packet (network header onwards) into dst,
// which is exactly pkt.Size() long, without allocating.
func copyPacket(dst []byte, pkt *gvstack.PacketBuffer) {
	views, off := pkt.AsViewList()
	n := 0
	for v := views.Front(); v != nil && n < len(dst); v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n += copy(dst[n:], s[off:])
		off = 0
	}
}

// MTU implements gvstack.LinkEndpoint.
func (e *linkEndpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements gvstack.LinkEndpoint.
func (e *linkEndpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements gvstack.LinkEndpoint: IP packets carry no
// link header.
func (*linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements gvstack.LinkEndpoint: a TUN has none.
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements gvstack.LinkEndpoint.
func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements gvstack.LinkEndpoint. No checksum offload:
// gVisor verifies inbound and computes outbound checksums, since the app's
// packets reach us as plain IP packets.
func (*linkEndpoint) Capabilities() gvstack.LinkEndpointCapabilities {
	return gvstack.CapabilityNone
}

// Attach implements gvstack.LinkEndpoint.
func (e *linkEndpoint) Attach(d gvstack.NetworkDispatcher) {
	e.dmu.Lock()
	defer e.dmu.Unlock()
	e.dispatcher = d
}

// IsAttached implements gvstack.LinkEndpoint.
func (e *linkEndpoint) IsAttached() bool {
	e.dmu.RLock()
	defer e.dmu.RUnlock()
	return e.dispatcher != nil
}

// Wait implements gvstack.LinkEndpoint: there are no worker goroutines.
func (*linkEndpoint) Wait() {}

// ARPHardwareType implements gvstack.LinkEndpoint.
func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements gvstack.LinkEndpoint: no link header.
func (*linkEndpoint) AddHeader(*gvstack.PacketBuffer) {}

// ParseHeader implements gvstack.LinkEndpoint: no link header.
func (*linkEndpoint) ParseHeader(*gvstack.PacketBuffer) bool { return true }

// Close implements gvstack.LinkEndpoint. It waits for writes in progress;
// afterwards the PacketWriter is never called again.
func (e *linkEndpoint) Close() {
	e.wmu.Lock()
	e.closed = true
	e.wmu.Unlock()
	e.Attach(nil)
}

// SetOnCloseAction implements gvstack.LinkEndpoint.
func (*linkEndpoint) SetOnCloseAction(func()) {}
