package tcp

import (
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// memConfig is the gateway's shipped configuration (configs/gateway.yaml):
// the buffer sizes whose eager allocation made connections expensive.
func memConfig() Config {
	c := DefaultConfig()
	c.RecvBufSize, c.RecvBufMax, c.SendBufSize = 256<<10, 4<<20, 1<<20
	c.SetDefaults()
	return c
}

// memPeer drives one TCB through a handshake and small exchanges without
// the harness's recording, so that what stays on the heap is the TCB's.
type memPeer struct {
	tcb *TCB
	now clock.Time
	nxt Seq
	ts  uint32
}

func discardSeg(*Segment) {}

func (p *memPeer) seg(flags packet.TCPFlags, payload []byte) Segment {
	p.ts++
	s := Segment{
		Seq: p.nxt, Ack: p.tcb.sndMax, Flags: flags, Wnd: 0xffff, Payload: payload,
		Opts: packet.TCPOptions{HasTS: true, TSVal: p.ts, TSEcr: p.tcb.tsNow()},
	}
	p.nxt = p.nxt.Add(uint32(len(payload)))
	if flags&packet.FIN != 0 {
		p.nxt = p.nxt.Add(1)
	}
	return s
}

func (p *memPeer) in(flags packet.TCPFlags, payload []byte) {
	s := p.seg(flags, payload)
	p.tcb.Input(&s, p.now)
	p.tcb.Output(p.now, discardSeg)
}

// memOpen opens a passive connection with the options a Linux client
// offers.
func memOpen(cfg *Config, i int) *memPeer {
	p := &memPeer{now: t0, nxt: testIRS, ts: 1000}
	syn := Segment{Seq: testIRS, Flags: packet.SYN, Wnd: 64240, Opts: packet.TCPOptions{
		MSS: 1460, HasMSS: true, WScale: 7, HasWScale: true, SACKPermitted: true, HasTS: true, TSVal: p.ts,
	}}
	p.tcb = NewSynReceived(cfg, &syn, testISS+Seq(i), uint32(i), p.now)
	p.nxt = testIRS.Add(1)
	p.tcb.Output(p.now, discardSeg)
	p.now = p.now.Add(time.Millisecond)
	p.in(packet.ACK, nil)
	return p
}

// memEstablished opens a connection and exchanges one byte each way, as
// the gateway's idle-connection benchmark does, then lets idle pass.
func memEstablished(cfg *Config, i int, idle time.Duration) *TCB {
	p := memOpen(cfg, i)
	var b [1]byte
	p.in(packet.ACK|packet.PSH, b[:])
	if n, _ := p.tcb.Read(b[:]); n != 1 {
		panic("memEstablished: byte not delivered")
	}
	p.tcb.Write(b[:])
	p.tcb.Output(p.now, discardSeg)
	p.now = p.now.Add(time.Millisecond)
	p.in(packet.ACK, nil)
	p.idle(idle)
	return p.tcb
}

// idle advances the clock by d, running timers as they fall due.
func (p *memPeer) idle(d time.Duration) {
	end := p.now.Add(d)
	for dl := p.tcb.Deadline(); dl != 0 && !dl.After(end); dl = p.tcb.Deadline() {
		p.now = dl
		p.tcb.OnTimer(p.now)
		p.tcb.Output(p.now, discardSeg)
	}
	p.now = end
}

// memTimeWait takes a connection that exchanged a byte each way through an
// active close into TIME-WAIT.
func memTimeWait(cfg *Config, i int) *TCB {
	t := memEstablished(cfg, i, 0)
	p := &memPeer{tcb: t, now: t.now, nxt: t.rcvNxt, ts: t.tsRecent}
	t.Close()
	t.Output(p.now, discardSeg)
	p.in(packet.ACK, nil)
	p.in(packet.ACK|packet.FIN, nil)
	if t.State() != TimeWait {
		panic("memTimeWait: state " + t.State().String())
	}
	return t
}

// heapPerTCB builds n TCBs with build and returns the live heap bytes each
// one holds. It stops early, after a first batch, when that batch alone
// shows the cost above limit: a regression must fail, not exhaust memory.
func heapPerTCB(n, limit int, build func(int) *TCB) (perTCB float64, built int) {
	keep := make([]*TCB, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keep {
		keep[i] = build(i)
		if i == 99 {
			var m runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m)
			if d := (float64(m.HeapAlloc) - float64(before.HeapAlloc)) / 100; d > float64(limit) {
				return d, 100
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n), n
}

// TestMemory_PerConnectionFootprint measures what a connection costs on
// the heap with the gateway's buffer configuration (1 MiB send, 256 KiB
// receive buffer): after the handshake, idle ESTABLISHED after a one-byte
// exchange each way (before and after BufferIdle released the buffers),
// and TIME-WAIT. The bounds are generous; the figures are logged (go test
// -v -run Footprint).
func TestMemory_PerConnectionFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 10k connections")
	}
	const n = 10000
	cfg := memConfig()
	t.Logf("sizeof(TCB) = %d bytes", unsafe.Sizeof(TCB{}))
	for _, c := range []struct {
		name  string
		limit int
		build func(int) *TCB
	}{
		{"ESTABLISHED, no data", 2 << 10, func(i int) *TCB { return memOpen(&cfg, i).tcb }},
		{"ESTABLISHED, idle 100ms after 1 byte each way", 64 << 10, func(i int) *TCB {
			return memEstablished(&cfg, i, 100*time.Millisecond)
		}},
		{"ESTABLISHED, idle 3s after 1 byte each way", 2 << 10, func(i int) *TCB {
			return memEstablished(&cfg, i, 3*time.Second)
		}},
		{"TIME-WAIT", 2 << 10, func(i int) *TCB { return memTimeWait(&cfg, i) }},
	} {
		per, built := heapPerTCB(n, c.limit, c.build)
		t.Logf("%s: %.0f heap bytes per connection (%d connections)", c.name, per, built)
		if per > float64(c.limit) {
			t.Errorf("%s holds %.0f heap bytes per connection, want at most %d", c.name, per, c.limit)
		}
	}
}
