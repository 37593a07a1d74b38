package tun

import (
	"fmt"

	"github.com/tungate/tungate/internal/virtio"
	"github.com/tungate/tungate/stack"
)

// Writer adapts a Device to stack.PacketWriter. It is safe for concurrent
// use by many goroutines because Device.Write is (the Linux device
// serializes inside wgtun).
type Writer struct {
	dev Device
}

var _ stack.OffloadWriter = (*Writer)(nil)

// NewWriter returns a Writer that writes to dev. It does not own dev.
func NewWriter(dev Device) *Writer { return &Writer{dev: dev} }

// WritePackets implements stack.PacketWriter. An offset below Headroom is
// rejected with ErrShortHeadroom before anything is written. The device may
// use the headroom, rewrite the packets in place and use spare capacity
// after each packet while coalescing (see Device.Write); it keeps nothing
// after returning. Errors after the device is closed satisfy
// errors.Is(err, os.ErrClosed).
func (w *Writer) WritePackets(bufs [][]byte, offset int) (int, error) {
	if offset < Headroom {
		return 0, fmt.Errorf("tun: write packets to %s: offset %d: %w", w.dev.Name(), offset, ErrShortHeadroom)
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if od, ok := w.dev.(OffloadDevice); ok && od.Offloads() {
		// On the superpacket path every write carries a header: these
		// packets are plain ones, complete with their checksums.
		for _, b := range bufs {
			clear(b[offset-virtio.HdrLen : offset])
		}
		return od.WriteOffload(bufs, offset)
	}
	return w.dev.Write(bufs, offset)
}

// Offloads implements stack.OffloadWriter: whether the device does.
func (w *Writer) Offloads() bool { return Offloads(w.dev) }

// WritePacketsOffload implements stack.OffloadWriter.
func (w *Writer) WritePacketsOffload(bufs [][]byte, offset int) (int, error) {
	if offset < Headroom {
		return 0, fmt.Errorf("tun: write packets to %s: offset %d: %w", w.dev.Name(), offset, ErrShortHeadroom)
	}
	od, ok := w.dev.(OffloadDevice)
	if !ok || !od.Offloads() {
		return 0, fmt.Errorf("tun: write packets to %s: %w", w.dev.Name(), errNoOffload)
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	return od.WriteOffload(bufs, offset)
}
