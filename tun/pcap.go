package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Classic libpcap file format, as tcpdump and Wireshark read it.
const (
	pcapMagicMicros = 0xa1b2c3d4 // microsecond timestamps
	pcapVersionMaj  = 2
	pcapVersionMin  = 4
	pcapSnapLen     = 65535
	// pcapLinkTypeRaw (LINKTYPE_RAW) starts each record at the IP header,
	// whose version nibble tells IPv4 from IPv6.
	pcapLinkTypeRaw = 101
	pcapFileHdrLen  = 24
	pcapRecHdrLen   = 16
)

// PcapDevice is a Device whose reads and writes are also appended to a pcap
// stream. Tapping never affects traffic: the first error writing the stream
// is logged and turns the tap off.
type PcapDevice struct {
	dev Device
	log *slog.Logger
	now func() time.Time

	off atomic.Bool // set once a stream write failed; checked without mu

	// mu guards w, rec and err, and keeps each batch's records together
	// and in order in the stream.
	mu  sync.Mutex
	w   io.Writer
	rec []byte // records of the batch being written
	err error
}

var _ OffloadDevice = (*PcapDevice)(nil)

// WithPcap wraps dev so that every packet read from it or written to it is
// appended to w as a classic pcap stream (LINKTYPE_RAW, microsecond
// timestamps, snaplen 65535; one w.Write per batch). It writes the file
// header at once. Written packets are recorded as passed to Write, before
// the device may coalesce them, including packets that then fail to go
// out. The caller owns w: the wrapper's Close closes dev but not w (flush
// or close w after it). log may be nil.
func WithPcap(dev Device, w io.Writer, log *slog.Logger) *PcapDevice {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &PcapDevice{dev: dev, log: log, now: time.Now, w: w}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rec = appendPcapFileHeader(p.rec[:0])
	p.flushLocked()
	return p
}

// Err returns the stream write error that turned the tap off, or nil.
func (p *PcapDevice) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Read implements Device.Read and records the packets read.
func (p *PcapDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := p.dev.Read(bufs, sizes, offset)
	p.recordRead(bufs, sizes, offset, n, err)
	return n, err
}

// Offloads implements OffloadDevice.Offloads: the wrapped device's.
func (p *PcapDevice) Offloads() bool { return Offloads(p.dev) }

// ReadOffload implements OffloadDevice.ReadOffload. Superpackets are
// recorded whole, as they crossed the TUN (what tcpdump on the interface
// shows too), their TCP checksum partial.
func (p *PcapDevice) ReadOffload(bufs [][]byte, sizes []int, offset int) (int, error) {
	od, ok := p.dev.(OffloadDevice)
	if !ok {
		return 0, errNoOffload
	}
	n, err := od.ReadOffload(bufs, sizes, offset)
	p.recordRead(bufs, sizes, offset, n, err)
	return n, err
}

// WriteOffload implements OffloadDevice.WriteOffload, recording the
// packets whole before writing them.
func (p *PcapDevice) WriteOffload(bufs [][]byte, offset int) (int, error) {
	od, ok := p.dev.(OffloadDevice)
	if !ok {
		return 0, errNoOffload
	}
	p.recordWrite(bufs, offset)
	return od.WriteOffload(bufs, offset)
}

func (p *PcapDevice) recordRead(bufs [][]byte, sizes []int, offset, n int, err error) {
	if n > 0 && (err == nil || errors.Is(err, wgtun.ErrTooManySegments)) && !p.off.Load() {
		p.mu.Lock()
		ts := p.now()
		for i := range n {
			if end := offset + sizes[i]; sizes[i] > 0 && end <= len(bufs[i]) {
				p.rec = appendPcapRecord(p.rec, ts, bufs[i][offset:end])
			}
		}
		p.flushLocked()
		p.mu.Unlock()
	}
}

// Write implements Device.Write and records the packets before writing them.
func (p *PcapDevice) Write(bufs [][]byte, offset int) (int, error) {
	p.recordWrite(bufs, offset)
	return p.dev.Write(bufs, offset)
}

func (p *PcapDevice) recordWrite(bufs [][]byte, offset int) {
	if len(bufs) > 0 && !p.off.Load() {
		p.mu.Lock()
		ts := p.now()
		for _, b := range bufs {
			if offset >= 0 && offset <= len(b) {
				p.rec = appendPcapRecord(p.rec, ts, b[offset:])
			}
		}
		p.flushLocked()
		p.mu.Unlock()
	}
}

// flushLocked writes the pending records; on failure it logs once and turns
// the tap off.
func (p *PcapDevice) flushLocked() {
	if len(p.rec) == 0 || p.err != nil {
		p.rec = p.rec[:0]
		return
	}
	_, err := p.w.Write(p.rec)
	p.rec = p.rec[:0]
	if err != nil {
		p.err = fmt.Errorf("tun: pcap tap of %s: %w", p.dev.Name(), err)
		p.off.Store(true)
		p.rec = nil
		p.log.Error("pcap tap disabled after write error", "name", p.dev.Name(), "err", err)
	}
}

// BatchSize implements Device.BatchSize.
func (p *PcapDevice) BatchSize() int { return p.dev.BatchSize() }

// MTU implements Device.MTU.
func (p *PcapDevice) MTU() int { return p.dev.MTU() }

// Name implements Device.Name.
func (p *PcapDevice) Name() string { return p.dev.Name() }

// Close closes the wrapped device; the stream stays open.
func (p *PcapDevice) Close() error { return p.dev.Close() }

func appendPcapFileHeader(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, pcapMagicMicros)
	b = le.AppendUint16(b, pcapVersionMaj)
	b = le.AppendUint16(b, pcapVersionMin)
	b = le.AppendUint32(b, 0) // thiszone: timestamps are UTC
	b = le.AppendUint32(b, 0) // sigfigs
	b = le.AppendUint32(b, pcapSnapLen)
	return le.AppendUint32(b, pcapLinkTypeRaw)
}

func appendPcapRecord(b []byte, ts time.Time, pkt []byte) []byte {
	captured := pkt[:min(len(pkt), pcapSnapLen)]
	le := binary.LittleEndian
	b = le.AppendUint32(b, uint32(ts.Unix()))
	b = le.AppendUint32(b, uint32(ts.Nanosecond()/1000))
	b = le.AppendUint32(b, uint32(len(captured)))
	b = le.AppendUint32(b, uint32(len(pkt)))
	return append(b, captured...)
}
