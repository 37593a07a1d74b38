// Package faulty injects network faults between a TUN device and the stack
// that reads it: packet loss, duplication, reordering and delay, each
// drawn from a seeded random sequence per direction, so that a run can be
// reproduced. The kernels tungate is tested on may lack the netem qdisc,
// so the faults are made in user space, on the same packets the stack
// sees.
//
//	cfg, err := faulty.ParseSpec("loss=0.01,reorder=0.02,seed=42")
//	dev, err = faulty.Wrap(dev, cfg)
//
// Faults are decided per packet in the order packets pass: inbound in the
// order the wrapped device's Read returns them, outbound in the order of
// the Write calls. Given the same seed, configuration and packet sequence
// the same packets are dropped, duplicated, held and delayed. Delivery
// times follow the Config's Clock.
package faulty

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/tun"
)

// Device is a tun.Device that injects the faults of its Config into the
// traffic of the device it wraps.
//
// A direction without faults passes straight through, without a copy; so
// does everything when the Config injects nothing. A direction with
// faults copies the packets it keeps:
//
//   - Inbound, a goroutine of the Device reads the wrapped device into
//     buffers of its own (BatchSize of them, each big enough for the
//     largest packet) and queues the packets that survive; Read returns
//     them when they are due. Duplicates and released packets that do not
//     fit the caller's batch are returned by the next Read. The queue is
//     bounded: while it is full the Device stops reading, so excess
//     traffic backs up in the wrapped device (the kernel's TUN queue)
//     rather than being dropped here.
//   - Outbound, Write delivers the packets that are due at once, in the
//     caller's buffers; packets held or delayed are copied and written by
//     a timer (or by a later Write, whichever comes first). Write returns
//     after handing the due packets to the wrapped device; it reports
//     dropped, held and delayed packets as written.
//
// Close writes every outbound packet still held or delayed at once, then
// closes the wrapped device and waits for the Device's goroutines.
// Inbound packets not yet read are discarded, as a closing TUN does; the
// Stats count them.
type Device struct {
	dev tun.Device
	cfg Config
	clk clock.Clock
	log *slog.Logger

	in  *line // nil when the inbound direction has no faults
	out *line // nil when the outbound direction has no faults

	// Inbound: the pump goroutine fills in's queue, Read empties it.
	notify  chan struct{} // one token: in's queue grew or a time passed; wakes Read
	room    chan struct{} // one token: in's queue shrank; wakes the pump
	inLimit int           // the pump pauses at this many pending copies
	inAlarm *alarm        // wakes Read when a held or delayed packet is due
	readErr error         // guarded by in.mu: a non-fatal read error for the next Read
	endErr  error         // guarded by in.mu: the error that ended the pump

	// wmu serializes outbound delivery (Write, the alarm's flush and
	// Close's flush), so that packets reach the wrapped device in the order
	// the line released them. It guards wclosed, wbatch and wbufs.
	wmu      sync.Mutex
	wclosed  bool
	wbatch   []item
	wbufs    [][]byte
	outAlarm *alarm // flushes outbound packets when they are due

	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup // the pump and pending alarm callbacks
}

var _ tun.Device = (*Device)(nil)

// Wrap returns a Device that injects the faults of cfg into the traffic of
// dev. The Device owns dev from now on: it may start reading dev at once,
// and its Close closes dev. A cfg that fails Validate is an error, and dev
// stays the caller's (ParseSpec returns only valid Configs).
func Wrap(dev tun.Device, cfg Config) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Device{
		dev:    dev,
		cfg:    cfg,
		clk:    cfg.Clock,
		log:    cfg.Logger,
		notify: make(chan struct{}, 1),
		room:   make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
	if d.clk == nil {
		d.clk = clock.Real()
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.inAlarm = newAlarm(d.clk, &d.wg, func() { signal(d.notify) })
	d.outAlarm = newAlarm(d.clk, &d.wg, d.flushOut)
	if cfg.injects(Outbound) {
		d.out = newLine(&d.cfg, outboundStream)
	}
	if cfg.injects(Inbound) {
		d.in = newLine(&d.cfg, inboundStream)
		d.inLimit = max(4*dev.BatchSize(), 256)
		d.wg.Add(1)
		go d.pump()
	}
	return d, nil
}

// Config returns the configuration the Device was made with.
func (d *Device) Config() Config { return d.cfg }

// Stats returns a snapshot of the fault counters. A direction without
// faults counts nothing.
func (d *Device) Stats() Stats {
	var s Stats
	if d.in != nil {
		s.Inbound = d.in.snapshot()
	}
	if d.out != nil {
		s.Outbound = d.out.snapshot()
	}
	return s
}

// Read implements tun.Device.Read. With inbound faults it returns the
// queued packets that are due, waiting until there is one; a packet larger
// than its buffer is discarded and reported with an error wrapping
// io.ErrShortBuffer (after the packets before it were returned). An error
// of the wrapped device's Read is returned in its turn: a closed wrapped
// device after everything read before it, any other error with or after
// the packets that came before it.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.in == nil {
		return d.dev.Read(bufs, sizes, offset)
	}
	for {
		if d.isClosed() {
			return 0, fmt.Errorf("faulty: read: %w", os.ErrClosed)
		}
		if n, done, err := d.readDue(bufs, sizes, offset); done {
			return n, err
		}
		select {
		case <-d.notify:
		case <-d.closed:
		}
	}
}

// readDue copies the due packets into bufs; done is false when there was
// nothing to return, after arming the alarm for the next due time.
func (d *Device) readDue(bufs [][]byte, sizes []int, offset int) (n int, done bool, err error) {
	l := d.in
	now := d.clk.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expireLocked(now)
	n, err = d.copyDueLocked(bufs, sizes, offset, now)
	if n > 0 || err != nil {
		signal(d.room)
		if _, more := l.peekDueLocked(now); more {
			signal(d.notify) // for another reader
		}
		if err == nil {
			err, d.readErr = d.readErr, nil
		}
		return n, true, err
	}
	if d.readErr != nil {
		err, d.readErr = d.readErr, nil
		signal(d.room)
		return 0, true, err
	}
	if d.endErr != nil && len(l.queue) == 0 {
		return 0, true, d.endErr
	}
	if at, ok := l.nextEventLocked(); ok {
		d.inAlarm.set(at)
	}
	return 0, false, nil
}

func (d *Device) copyDueLocked(bufs [][]byte, sizes []int, offset int, now clock.Time) (int, error) {
	l := d.in
	limit := min(len(bufs), len(sizes))
	n := 0
	for n < limit {
		it, ok := l.peekDueLocked(now)
		if !ok {
			break
		}
		pkt := it.packet()
		if room := len(bufs[n]) - offset; offset < 0 || len(pkt) > room {
			if n > 0 {
				break // reported by the next Read
			}
			l.popLocked()
			l.stats.Discarded++
			return 0, fmt.Errorf("faulty: read: %d-byte packet, %d-byte buffer: %w", len(pkt), max(room, 0), io.ErrShortBuffer)
		}
		sizes[n] = copy(bufs[n][offset:], pkt)
		l.popLocked()
		l.stats.Delivered++
		n++
	}
	return n, nil
}

// pump reads the wrapped device and feeds the inbound line until the
// device fails for good or the Device is closed.
func (d *Device) pump() {
	defer d.wg.Done()
	bufs, sizes := readBuffers(d.dev)
	for d.waitRoom() {
		n, err := d.dev.Read(bufs, sizes, tun.Headroom)
		if !d.admitInbound(bufs, sizes, n, err) {
			return
		}
	}
}

// waitRoom waits until the inbound line can take another batch and the
// last read error has been handed to Read; false means the Device closed.
func (d *Device) waitRoom() bool {
	for {
		if d.isClosed() {
			return false
		}
		d.in.mu.Lock()
		ok := d.in.pendingLocked() < d.inLimit && d.readErr == nil
		d.in.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-d.room:
		case <-d.closed:
			return false
		}
	}
}

// admitInbound feeds the n packets read into the inbound line and records
// err; it returns false when reading must stop.
func (d *Device) admitInbound(bufs [][]byte, sizes []int, n int, err error) bool {
	l := d.in
	now := d.clk.Now()
	l.mu.Lock()
	defer signal(d.notify)
	defer l.mu.Unlock()
	for i := range min(max(n, 0), len(bufs)) {
		if size := sizes[i]; size > 0 && tun.Headroom+size <= len(bufs[i]) {
			l.admitLocked(bufs[i][tun.Headroom:tun.Headroom+size], 0, now, false, -1)
		}
	}
	switch {
	case err == nil:
		return true
	case isClosedErr(err):
		// Deliver what is left now; the device will not send more to
		// release or follow it.
		d.endErr = fmt.Errorf("faulty: read: %w", err)
		l.releaseAllLocked(now)
		return false
	default:
		d.readErr = fmt.Errorf("faulty: read: %w", err)
		return true
	}
}

// Write implements tun.Device.Write. It applies the outbound faults to
// each bufs[i][offset:] in order and writes the packets now due, in one
// call of the wrapped device's Write per run of packets with the same
// offset; packets it keeps are copied, so the caller may reuse bufs when
// Write returns. On error it returns the index of the first of the
// caller's packets that did not go out.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if d.out == nil {
		return d.dev.Write(bufs, offset)
	}
	for i, b := range bufs {
		if offset < 0 || offset > len(b) {
			return 0, fmt.Errorf("faulty: write: offset %d outside %d-byte buffer %d", offset, len(b), i)
		}
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.wclosed {
		return 0, fmt.Errorf("faulty: write: %w", os.ErrClosed)
	}
	l := d.out
	now := d.clk.Now()
	l.mu.Lock()
	l.expireLocked(now)
	for i, b := range bufs {
		l.admitLocked(b, offset, now, true, i)
	}
	d.takeOutLocked(now)
	l.mu.Unlock()

	sent, err := d.writeBatchLocked()
	n := len(bufs)
	if err != nil {
		for _, it := range d.wbatch[sent:] {
			if it.src >= 0 {
				n = min(n, it.src)
			}
		}
	}
	clear(d.wbatch) // drop the references to the caller's buffers
	return n, err
}

// takeOutLocked moves the due outbound items to wbatch and arms the alarm
// for the next ones. The caller holds wmu and out.mu.
func (d *Device) takeOutLocked(now clock.Time) {
	d.wbatch = d.out.takeDueLocked(now, d.wbatch[:0])
	if at, ok := d.out.nextEventLocked(); ok {
		d.outAlarm.set(at)
	}
}

// flushOut writes the outbound packets that have become due; the alarm
// calls it.
func (d *Device) flushOut() {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.wclosed {
		return
	}
	now := d.clk.Now()
	d.out.mu.Lock()
	d.out.expireLocked(now)
	d.takeOutLocked(now)
	d.out.mu.Unlock()
	if _, err := d.writeBatchLocked(); err != nil && !isClosedErr(err) {
		d.log.Warn("faulty: delayed write failed", "dev", d.dev.Name(), "err", err)
	}
	clear(d.wbatch)
}

// writeBatchLocked writes wbatch to the wrapped device, one Write per run
// of items with the same offset, counts the outcome and returns how many
// items went out. The caller holds wmu.
func (d *Device) writeBatchLocked() (int, error) {
	items := d.wbatch
	for start := 0; start < len(items); {
		off := items[start].off
		end := start + 1
		for end < len(items) && items[end].off == off {
			end++
		}
		d.wbufs = d.wbufs[:0]
		for _, it := range items[start:end] {
			d.wbufs = append(d.wbufs, it.buf)
		}
		m, err := d.dev.Write(d.wbufs, off)
		clear(d.wbufs)
		m = min(max(m, 0), end-start)
		d.out.mu.Lock()
		d.out.stats.Delivered += uint64(m)
		if err != nil {
			d.out.stats.Discarded += uint64(len(items) - start - m)
		}
		d.out.mu.Unlock()
		if err != nil {
			return start + m, fmt.Errorf("faulty: write: %w", err)
		}
		start = end
	}
	return len(items), nil
}

// BatchSize implements tun.Device.BatchSize.
func (d *Device) BatchSize() int { return d.dev.BatchSize() }

// MTU implements tun.Device.MTU.
func (d *Device) MTU() int { return d.dev.MTU() }

// Name implements tun.Device.Name.
func (d *Device) Name() string { return d.dev.Name() }

// Close writes the outbound packets still held or delayed, closes the
// wrapped device (which unblocks a pending Read) and waits for the
// Device's goroutines and timers. Inbound packets not yet read are
// discarded. Later Reads and Writes fail with os.ErrClosed. Close is
// idempotent and returns the wrapped device's Close error.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.flushOnClose()
		close(d.closed)
		d.inAlarm.stop()
		d.outAlarm.stop()
		d.closeErr = d.dev.Close()
		d.wg.Wait()
		if d.in != nil {
			d.in.mu.Lock()
			d.in.discardAllLocked()
			d.in.mu.Unlock()
		}
	})
	return d.closeErr
}

// flushOnClose writes every outbound packet still held or delayed, so
// that reordering and delay never lose a packet, and stops outbound
// delivery.
func (d *Device) flushOnClose() {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.wclosed = true
	if d.out == nil {
		return
	}
	now := d.clk.Now()
	d.out.mu.Lock()
	d.out.releaseAllLocked(now)
	d.wbatch = d.out.takeDueLocked(now, d.wbatch[:0])
	d.out.mu.Unlock()
	if _, err := d.writeBatchLocked(); err != nil {
		d.log.Warn("faulty: flushing held packets on close failed", "dev", d.dev.Name(), "err", err)
	}
	clear(d.wbatch)
}

func (d *Device) isClosed() bool {
	select {
	case <-d.closed:
		return true
	default:
		return false
	}
}

// readBuffers allocates the pump's buffers as tun.ReadLoop sizes them: the
// MTU, or the largest IP packet when the device batches (offloads may
// return packets above the MTU).
func readBuffers(dev tun.Device) ([][]byte, []int) {
	const maxPacket = 65535
	batch := max(dev.BatchSize(), 1)
	size := dev.MTU()
	if batch > 1 || size <= 0 {
		size = max(size, maxPacket)
	}
	size += tun.Headroom
	backing := make([]byte, batch*size)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = backing[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs, make([]int, batch)
}

// signal leaves a token in ch unless one is there already.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// isClosedErr reports whether err means the wrapped device is closed
// rather than broken.
func isClosedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}
