package tun_test

import (
	"fmt"
	"os"
	"sync"

	"github.com/tungate/tungate/tun"
	"github.com/tungate/tungate/tun/tuntest"
)

var (
	_ tun.Device = (*tuntest.Device)(nil)
	_ tun.Device = (*scriptedDevice)(nil)
)

// readResult is one scripted Read outcome: the packets it returns and the
// error it returns with them.
type readResult struct {
	pkts [][]byte
	err  error
}

// scriptedDevice returns its script one Read at a time, then os.ErrClosed.
// It records the buffer sizes it was offered.
type scriptedDevice struct {
	batch, mtu int

	// mu guards script and bufLens.
	mu      sync.Mutex
	script  []readResult
	bufLens []int
}

func (d *scriptedDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.bufLens = append(d.bufLens, len(bufs[0]))
	if len(d.script) == 0 {
		return 0, fmt.Errorf("scripted: %w", os.ErrClosed)
	}
	r := d.script[0]
	d.script = d.script[1:]
	for i, p := range r.pkts {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(r.pkts), r.err
}

func (d *scriptedDevice) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (d *scriptedDevice) BatchSize() int                               { return d.batch }
func (d *scriptedDevice) MTU() int                                     { return d.mtu }
func (d *scriptedDevice) Name() string                                 { return "scripted0" }
func (d *scriptedDevice) Close() error                                 { return nil }
