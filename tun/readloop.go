package tun

import (
	"context"
	"errors"
	"fmt"

	"github.com/tungate/tungate/internal/virtio"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// ReadLoop reads batches of packets from dev until it is closed or ctx is
// done, and hands each batch to deliver.
//
// It allocates BatchSize() buffers once, each with Headroom bytes before the
// packet and room for MTU bytes, or for 65535 when the device batches (a
// device with offloads may return packets larger than its MTU). deliver gets
// slices that start at the IP header; they and the slice holding them are
// reused by the next Read, so deliver copies what it keeps (as
// stack.Stack.DeliverInbound does). Empty packets are skipped.
//
// When ctx is done ReadLoop closes dev to unblock its Read: the caller that
// cancels ctx gives up the device. ReadLoop returns nil when ctx is done or
// dev is closed (errors satisfying os.ErrClosed, net.ErrClosed or io.EOF),
// and otherwise the first read or deliver error, wrapped.
// wgtun.ErrTooManySegments is not an error here: the packets that came with
// it are delivered and reading goes on (the device logs or counts it).
func ReadLoop(ctx context.Context, dev Device, deliver func(pkts [][]byte) error) error {
	return readLoop(ctx, dev, dev.Read, 0, deliver)
}

// ReadLoopOffload is ReadLoop on the superpacket path: it reads with
// dev.ReadOffload and hands deliver each packet with its virtio-net
// header in front (stack.OffloadStack.DeliverInboundOffload's shape).
// dev must report Offloads.
func ReadLoopOffload(ctx context.Context, dev OffloadDevice, deliver func(pkts [][]byte) error) error {
	if !dev.Offloads() {
		return fmt.Errorf("tun: read from %s: %w", dev.Name(), errNoOffload)
	}
	return readLoop(ctx, dev, dev.ReadOffload, virtio.HdrLen, deliver)
}

// readLoop is ReadLoop with read as the device's read and the packets
// handed over with the front bytes of headroom before each.
func readLoop(ctx context.Context, dev Device, read func([][]byte, []int, int) (int, error), front int, deliver func(pkts [][]byte) error) error {
	bufs, sizes := readBuffers(dev)
	pkts := make([][]byte, 0, len(bufs))

	stop := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-ctx.Done():
			_ = dev.Close()
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-watcherDone
	}()

	for {
		n, err := read(bufs, sizes, Headroom)
		pkts, perr := packets(pkts[:0], bufs, sizes, n, front)
		if perr != nil {
			return fmt.Errorf("tun: read from %s: %w", dev.Name(), perr)
		}
		if len(pkts) > 0 {
			if derr := deliver(pkts); derr != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("tun: deliver packets from %s: %w", dev.Name(), derr)
			}
		}
		switch {
		case err == nil, errors.Is(err, wgtun.ErrTooManySegments):
		case ctx.Err() != nil, isClosedErr(err):
			return nil
		default:
			return fmt.Errorf("tun: read from %s: %w", dev.Name(), err)
		}
	}
}

// readBuffers allocates the loop's buffers from one backing array.
func readBuffers(dev Device) ([][]byte, []int) {
	batch := max(dev.BatchSize(), 1)
	size := dev.MTU()
	if batch > 1 {
		size = max(size, maxPacket)
	}
	size += Headroom
	backing := make([]byte, batch*size)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = backing[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs, make([]int, batch)
}

// packets appends to dst the first n packets of bufs, each with the front
// bytes of headroom before it (0: from the IP header), and capped so that
// appending to one cannot overwrite the next.
func packets(dst, bufs [][]byte, sizes []int, n, front int) ([][]byte, error) {
	if n < 0 || n > len(bufs) {
		return dst, fmt.Errorf("device reported %d packets for %d buffers", n, len(bufs))
	}
	for i := range n {
		size := sizes[i]
		if size <= 0 {
			continue
		}
		end := Headroom + size
		if end > len(bufs[i]) {
			return dst, fmt.Errorf("device reported a %d-byte packet in a %d-byte buffer", size, len(bufs[i])-Headroom)
		}
		dst = append(dst, bufs[i][Headroom-front:end:end])
	}
	return dst, nil
}
