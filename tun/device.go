// Package tun owns the packet side of the gateway: it opens and configures a
// Linux TUN device (through golang.zx2c4.com/wireguard/tun, which brings
// virtio-net-hdr offloads, GSO splitting on read and GRO coalescing on
// write), runs the batched read loop that feeds a stack, adapts the device to
// stack.PacketWriter, and offers wrappers that count traffic or tap it into
// a pcap stream.
//
// The superpacket path (OffloadDevice, ReadLoopOffload) bypasses the
// splitting and coalescing: the device's descriptors are read and written
// with their virtio-net header, TCP superpackets whole, for a stack that
// takes them (stack.OffloadStack); a multi-queue device (Config.Queues)
// has one descriptor per queue, each its own OffloadDevice.
//
// Wrappers take and return Device, so they compose in any order:
//
//	var dev tun.Device = linux
//	dev = tun.WithStats(dev, &stats)
//	dev = tun.WithPcap(dev, file, log)
package tun

import (
	"errors"
	"io"
	"net"
	"os"

	"github.com/tungate/tungate/stack"
)

// Device is a TUN as the gateway uses it: a subset of wgtun.Device with the
// same method shapes, so wireguard-style wrappers and test doubles fit.
//
// Concurrency: Read and Write may run at the same time; Write is safe for
// concurrent use by several goroutines. Read is meant for one reader
// goroutine (implementations may serialize concurrent Reads).
//
// Close unblocks a pending Read; it and every later Read or Write fail with an
// error satisfying errors.Is(err, os.ErrClosed). Close is idempotent.
type Device interface {
	// Read reads up to len(bufs) packets; packet i is written to
	// bufs[i][offset:] and its size to sizes[i]. Returns number of packets.
	// len(sizes) must be >= len(bufs), and len(bufs) should be BatchSize().
	// A device that splits GSO super-packets may return n > 0 together with
	// wgtun.ErrTooManySegments: the n packets are valid, the rest of the
	// super-packet is lost, and reading may continue.
	Read(bufs [][]byte, sizes []int, offset int) (int, error)

	// Write writes bufs[i][offset:] as packets; bufs[i][:offset] is
	// headroom the device may use (>= stack.Headroom, 16). The device does
	// not keep bufs after it returns, but it may rewrite the packets' bytes
	// and the spare capacity after each packet (GRO coalescing on Linux);
	// a caller that needs a packet intact afterwards passes a copy. Write
	// never reorders or replaces the elements of bufs itself. It returns
	// the number of packets written.
	Write(bufs [][]byte, offset int) (int, error)

	// BatchSize is the number of packets Read may return at once and the
	// preferred number to Write at once. It does not change.
	BatchSize() int

	// MTU is the device's MTU in bytes.
	MTU() int

	// Name is the interface name.
	Name() string

	// Close removes or stops the device; see the type's doc for what it
	// unblocks.
	Close() error
}

// OffloadDevice is a Device that can also move packets whole with their
// virtio-net header (internal/virtio): TCP superpackets of up to 64 KB
// with partial checksums, as the kernel's TSO hands them over and as its
// receive path takes them.
//
// Wrappers implement it by passing through; they report Offloads false
// when their inner device does, and a wrapper that must see single
// segments (tun/faulty) does not implement it, so the chain falls back
// to Read and Write.
type OffloadDevice interface {
	Device
	// Offloads reports whether ReadOffload and WriteOffload work. It does
	// not change.
	Offloads() bool
	// ReadOffload is Read without splitting: packet i goes to
	// bufs[i][offset:], its virtio-net header to the virtio.HdrLen bytes
	// just before it, its size (header excluded) to sizes[i]. offset is
	// at least virtio.HdrLen, and a buffer must hold 65535 bytes after
	// offset. It waits for the first packet and then takes only those
	// already queued.
	ReadOffload(bufs [][]byte, sizes []int, offset int) (int, error)
	// WriteOffload is Write for packets whose virtio-net header the
	// caller put in the virtio.HdrLen bytes just before offset; nothing
	// is coalesced or rewritten. It returns the number of packets
	// written; after a failed packet it goes on with the next and
	// returns the first error.
	WriteOffload(bufs [][]byte, offset int) (int, error)
}

// Offloads reports whether dev is an OffloadDevice with offloads on.
func Offloads(dev Device) bool {
	od, ok := dev.(OffloadDevice)
	return ok && od.Offloads()
}

// Headroom is the headroom, in bytes, that every caller leaves before each
// packet in Read and Write buffers (the Linux device needs 10 bytes for the
// virtio-net header).
const Headroom = stack.Headroom

// maxPacket is the largest IP packet (the IPv4 total length limit); a device
// with offloads may hand over packets of up to this size.
const maxPacket = 65535

// ErrShortHeadroom is returned by writes whose offset leaves less than
// Headroom bytes before the packet.
var ErrShortHeadroom = errors.New("tun: offset leaves less than stack.Headroom bytes of headroom")

// isClosedErr reports whether err means the device (or what it feeds) is
// closed rather than broken.
func isClosedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}
