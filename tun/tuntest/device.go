// Package tuntest provides an in-memory tun.Device, so that the stacks and
// the gateway can be tested without root or a kernel TUN.
package tuntest

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/tungate/tungate/stack"
)

// DefaultBatchSize is the BatchSize of a Device made by New.
const DefaultBatchSize = 32

// OutboundCap is how many written packets a Device queues for the test
// before Write blocks.
const OutboundCap = 4096

// Device is an in-memory TUN: packets passed to Inject come out of Read (as
// if an app had sent them), and packets passed to Write come out of Next or
// Outbound (as if the kernel had delivered them to the app). It implements
// tun.Device, is safe for concurrent use, and drops nothing silently.
type Device struct {
	mtu   int
	batch int
	name  string

	// mu guards inbound; the closed channel is closed under it too, so an
	// Inject racing with Close is either read or discarded, never lost
	// while the device is open.
	mu      sync.Mutex
	inbound [][]byte

	ready     chan struct{} // holds a token while inbound may be non-empty
	out       chan []byte
	closed    chan struct{}
	closeOnce sync.Once
}

// New returns an open Device with the given MTU and DefaultBatchSize.
func New(mtu int) *Device { return NewWithBatchSize(mtu, DefaultBatchSize) }

// NewWithBatchSize returns an open Device whose BatchSize is batch (at
// least 1).
func NewWithBatchSize(mtu, batch int) *Device {
	return &Device{
		mtu:    mtu,
		batch:  max(batch, 1),
		name:   "tuntest0",
		ready:  make(chan struct{}, 1),
		out:    make(chan []byte, OutboundCap),
		closed: make(chan struct{}),
	}
}

// Inject queues a copy of pkt for Read. The queue is unbounded. After Close
// the packet is discarded.
func (d *Device) Inject(pkt []byte) {
	cp := append([]byte(nil), pkt...)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.isClosed() {
		return
	}
	d.inbound = append(d.inbound, cp)
	select {
	case d.ready <- struct{}{}:
	default:
	}
}

// Read implements tun.Device.Read: it blocks until packets are queued or
// the device is closed, then copies up to min(len(bufs), BatchSize())
// packets to bufs[i][offset:]. A packet that does not fit its buffer is
// dropped and reported with an error wrapping io.ErrShortBuffer (after the
// packets before it have been returned). After Close it returns
// os.ErrClosed, even with packets still queued.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, ok, err := d.tryRead(bufs, sizes, offset)
		if ok {
			return n, err
		}
		select {
		case <-d.ready:
		case <-d.closed:
		}
	}
}

// tryRead copies queued packets; ok is false when there were none.
func (d *Device) tryRead(bufs [][]byte, sizes []int, offset int) (n int, ok bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.isClosed() {
		return 0, true, fmt.Errorf("tuntest: read: %w", os.ErrClosed)
	}
	if len(d.inbound) == 0 {
		return 0, false, nil
	}
	defer d.signalLocked()
	limit := min(len(bufs), len(sizes), d.batch)
	for n < limit && len(d.inbound) > 0 {
		pkt := d.inbound[0]
		if room := len(bufs[n]) - offset; len(pkt) > room {
			if n > 0 {
				break // report it on the next Read
			}
			d.popLocked()
			return 0, true, fmt.Errorf("tuntest: read: %d-byte packet, %d-byte buffer: %w", len(pkt), max(room, 0), io.ErrShortBuffer)
		}
		sizes[n] = copy(bufs[n][offset:], pkt)
		d.popLocked()
		n++
	}
	return n, true, nil
}

func (d *Device) popLocked() {
	d.inbound[0] = nil
	d.inbound = d.inbound[1:]
}

// signalLocked leaves a token for the next reader when packets remain.
func (d *Device) signalLocked() {
	if len(d.inbound) == 0 {
		return
	}
	select {
	case d.ready <- struct{}{}:
	default:
	}
}

// Write implements tun.Device.Write: it queues a copy of each
// bufs[i][offset:] for Next and Outbound, blocking while the queue is full
// (never dropping). Like the Linux device it overwrites the headroom, so
// callers that keep data there fail their tests; an offset below
// stack.Headroom is an error. After Close it returns os.ErrClosed with the
// number of packets queued before.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if offset < stack.Headroom {
		return 0, fmt.Errorf("tuntest: write: offset %d below headroom %d", offset, stack.Headroom)
	}
	for i, b := range bufs {
		if offset > len(b) {
			return i, fmt.Errorf("tuntest: write: offset %d beyond %d-byte buffer", offset, len(b))
		}
		if d.isClosed() {
			return i, fmt.Errorf("tuntest: write: %w", os.ErrClosed)
		}
		cp := append([]byte(nil), b[offset:]...)
		clear(b[offset-stack.Headroom : offset])
		select {
		case d.out <- cp:
		case <-d.closed:
			return i, fmt.Errorf("tuntest: write: %w", os.ErrClosed)
		}
	}
	return len(bufs), nil
}

// Next returns the next written packet, waiting until there is one, ctx is
// done (ctx.Err()) or the device is closed with nothing left (os.ErrClosed).
func (d *Device) Next(ctx context.Context) ([]byte, error) {
	select {
	case p := <-d.out:
		return p, nil
	default:
	}
	select {
	case p := <-d.out:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.closed:
		select {
		case p := <-d.out:
			return p, nil
		default:
			return nil, os.ErrClosed
		}
	}
}

// Outbound returns the queue of written packets, for tests that select on
// it. The channel is never closed.
func (d *Device) Outbound() <-chan []byte { return d.out }

// BatchSize implements tun.Device.BatchSize.
func (d *Device) BatchSize() int { return d.batch }

// MTU implements tun.Device.MTU.
func (d *Device) MTU() int { return d.mtu }

// Name implements tun.Device.Name.
func (d *Device) Name() string { return d.name }

// Close unblocks pending Reads and Writes with os.ErrClosed and discards
// packets not yet read. Written packets stay available to Next. It is
// idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		close(d.closed)
		d.inbound = nil
	})
	return nil
}

func (d *Device) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}
