package tun

import (
	"errors"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Stats counts the traffic through a device wrapped by WithStats. Fields are
// read with Load at any time; the owner of the Stats keeps it (e.g. inside a
// metrics struct) and may share it between wrappers.
type Stats struct {
	ReadPackets  atomic.Uint64 // packets returned by Read
	ReadBytes    atomic.Uint64 // their IP bytes, headroom excluded
	ReadErrors   atomic.Uint64 // Read errors other than close
	Truncated    atomic.Uint64 // Reads that lost GSO segments (wgtun.ErrTooManySegments)
	WritePackets atomic.Uint64 // packets Write reported written
	WriteBytes   atomic.Uint64 // their IP bytes, as passed to Write
	WriteErrors  atomic.Uint64 // Write calls that failed, close excluded
}

// StatsDevice is a Device that counts its traffic into a Stats.
type StatsDevice struct {
	dev   Device
	stats *Stats
}

var _ OffloadDevice = (*StatsDevice)(nil)

// WithStats wraps dev so that its reads and writes are counted in s.
// Closing the wrapper closes dev.
func WithStats(dev Device, s *Stats) *StatsDevice { return &StatsDevice{dev: dev, stats: s} }

// Read implements Device.Read.
func (d *StatsDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.dev.Read(bufs, sizes, offset)
	d.countRead(sizes, n, err)
	return n, err
}

// Offloads implements OffloadDevice.Offloads: the wrapped device's.
func (d *StatsDevice) Offloads() bool { return Offloads(d.dev) }

// ReadOffload implements OffloadDevice.ReadOffload; a superpacket counts
// as one packet.
func (d *StatsDevice) ReadOffload(bufs [][]byte, sizes []int, offset int) (int, error) {
	od, ok := d.dev.(OffloadDevice)
	if !ok {
		return 0, errNoOffload
	}
	n, err := od.ReadOffload(bufs, sizes, offset)
	d.countRead(sizes, n, err)
	return n, err
}

// WriteOffload implements OffloadDevice.WriteOffload.
func (d *StatsDevice) WriteOffload(bufs [][]byte, offset int) (int, error) {
	od, ok := d.dev.(OffloadDevice)
	if !ok {
		return 0, errNoOffload
	}
	n, err := od.WriteOffload(bufs, offset)
	d.countWrite(bufs, offset, n, err)
	return n, err
}

func (d *StatsDevice) countRead(sizes []int, n int, err error) {
	var bytes uint64
	for i := range max(n, 0) {
		bytes += uint64(sizes[i])
	}
	d.stats.ReadPackets.Add(uint64(max(n, 0)))
	d.stats.ReadBytes.Add(bytes)
	switch {
	case err == nil, isClosedErr(err):
	case errors.Is(err, wgtun.ErrTooManySegments):
		d.stats.Truncated.Add(1)
	default:
		d.stats.ReadErrors.Add(1)
	}
}

// Write implements Device.Write.
func (d *StatsDevice) Write(bufs [][]byte, offset int) (int, error) {
	n, err := d.dev.Write(bufs, offset)
	d.countWrite(bufs, offset, n, err)
	return n, err
}

func (d *StatsDevice) countWrite(bufs [][]byte, offset, n int, err error) {
	// Device.Write keeps the elements of bufs, so their lengths still
	// describe the packets as passed in.
	var bytes uint64
	for _, b := range bufs[:min(max(n, 0), len(bufs))] {
		bytes += uint64(max(len(b)-offset, 0))
	}
	d.stats.WritePackets.Add(uint64(max(n, 0)))
	d.stats.WriteBytes.Add(bytes)
	if err != nil && !isClosedErr(err) {
		d.stats.WriteErrors.Add(1)
	}
}

// BatchSize implements Device.BatchSize.
func (d *StatsDevice) BatchSize() int { return d.dev.BatchSize() }

// MTU implements Device.MTU.
func (d *StatsDevice) MTU() int { return d.dev.MTU() }

// Name implements Device.Name.
func (d *StatsDevice) Name() string { return d.dev.Name() }

// Close closes the wrapped device.
func (d *StatsDevice) Close() error { return d.dev.Close() }
