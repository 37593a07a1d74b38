package tcp

import (
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// TestConn_TryReadTryWriteAndNotify: the non-blocking calls never wait:
// with nothing to read, or no room to write, they return EAGAIN, and the
// notify function runs once that changes (data, room, the FIN). The
// last data and the FIN come out of TryRead together, and TryWrite with
// fin puts its data and our FIN on one segment.
func TestConn_TryReadTryWriteAndNotify(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.TCB.SendBufSize = 1000 })
	sc, iss := h.establish(nearWrap)
	c := sc.(*Conn)
	var notified atomic.Int32
	c.SetNotify(func() { notified.Add(1) })
	buf := make([]byte, 64)

	if n, err := c.TryRead(buf); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("TryRead with nothing buffered: %d, %v; want 0, EAGAIN", n, err)
	}
	before := notified.Load()
	h.send(seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK | packet.PSH, data: []byte("hello")})
	if notified.Load() == before {
		t.Fatal("data arrived without a notification")
	}
	if n, err := c.TryRead(buf); n != 5 || err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("TryRead after data: %d %q, %v", n, buf[:n], err)
	}
	if n, err := c.TryRead(buf); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("TryRead once drained: %d, %v; want 0, EAGAIN", n, err)
	}
	h.take()

	// Fill the 1000-byte send buffer: a short count, then EAGAIN.
	big := make([]byte, 1500)
	n, err := c.TryWrite(big, false)
	if n != 1000 || err != nil {
		t.Fatalf("TryWrite of 1500 into a 1000-byte buffer: %d, %v; want 1000, nil", n, err)
	}
	if n, err := c.TryWrite(big, false); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("TryWrite into a full buffer: %d, %v; want 0, EAGAIN", n, err)
	}
	var sent uint32
	for _, g := range h.take() {
		sent += uint32(len(g.data))
	}
	if sent == 0 {
		t.Fatal("nothing of the buffered data sent")
	}
	before = notified.Load()
	h.send(seg{seq: nearWrap + 6, ack: iss + 1 + sent, flags: packet.ACK})
	if notified.Load() == before {
		t.Fatal("room freed without a notification")
	}
	if n, err := c.TryWrite(big, false); n != int(sent) || err != nil {
		t.Fatalf("TryWrite once %d bytes were acknowledged: %d, %v; want them taken", sent, n, err)
	}
	// Drain: acknowledge everything sent until all 1000+sent bytes are.
	total := uint32(1000) + sent
	for acked := sent; acked < total; {
		gs := h.take()
		if len(gs) == 0 {
			h.advance(time.Second) // let a timer send what is held
			continue
		}
		for _, g := range gs {
			if end := g.seq + uint32(len(g.data)) - (iss + 1); len(g.data) > 0 && int32(end-acked) > 0 {
				acked = end
			}
		}
		h.send(seg{seq: nearWrap + 6, ack: iss + 1 + acked, flags: packet.ACK})
	}
	sent = total
	h.take()

	// Data and FIN on one segment, both ways.
	if n, err := c.TryWrite([]byte("bye"), true); n != 3 || err != nil {
		t.Fatalf("TryWrite with fin: %d, %v", n, err)
	}
	gs := h.take()
	if len(gs) != 1 || string(gs[0].data) != "bye" || gs[0].flags&packet.FIN == 0 {
		t.Fatalf("TryWrite(\"bye\", fin) emitted %+v; want one segment with the data and FIN", gs)
	}
	if _, err := c.TryWrite([]byte("x"), false); err == nil {
		t.Fatal("TryWrite after the FIN succeeded")
	}
	before = notified.Load()
	h.send(seg{seq: nearWrap + 6, ack: iss + 1 + sent + 4, flags: packet.ACK | packet.FIN | packet.PSH, data: []byte("end")})
	if notified.Load() == before {
		t.Fatal("the FIN arrived without a notification")
	}
	if n, err := c.TryRead(buf); n != 3 || err != io.EOF {
		t.Fatalf("TryRead of the last data before the FIN: %d, %v; want 3, io.EOF", n, err)
	}
	if n, err := c.TryRead(buf); n != 0 || err != io.EOF {
		t.Fatalf("TryRead after the FIN: %d, %v; want 0, io.EOF", n, err)
	}
}

// TestConn_NoWaitChannelsWithoutWaiters: a connection whose user never
// blocks holds none of the waiters' channels (an idle connection costs
// them only once something waits on it).
func TestConn_NoWaitChannelsWithoutWaiters(t *testing.T) {
	h := newPktHarness(t, nil)
	sc, iss := h.establish(nearWrap)
	c := sc.(*Conn)
	h.send(seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK | packet.PSH, data: []byte("hi")})
	if n, err := c.TryRead(make([]byte, 8)); n != 2 || err != nil {
		t.Fatalf("TryRead: %d, %v", n, err)
	}
	c.f.mu.Lock()
	w := c.f.wait
	c.f.mu.Unlock()
	if w.read != nil || w.write != nil || w.deadline != nil {
		t.Fatalf("waiters after non-blocking use: read %v write %v deadline %v; want none made", w.read, w.write, w.deadline)
	}
}

// TestConn_NotifyAfterRunsOnceTheBatchIsOut: for a small batch read from
// the TUN, SetNotifyAfter's function runs after the batch, with no lock
// held (it reads the Conn), and SetNotify's does not; a batch of bulk
// data calls SetNotify's function instead, leaving the work to the
// relay's own goroutine.
func TestConn_NotifyAfterRunsOnceTheBatchIsOut(t *testing.T) {
	h := newPktHarness(t, nil)
	sc, iss := h.establish(nearWrap)
	c := sc.(*Conn)
	h.take()
	var plain, after atomic.Int32
	var got []byte
	c.SetNotify(func() { plain.Add(1) })
	c.SetNotifyAfter(func() {
		after.Add(1)
		buf := make([]byte, 64<<10)
		n, _ := c.TryRead(buf) // would deadlock under the flow's lock
		got = append(got, buf[:n]...)
	})
	h.send(seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK | packet.PSH, data: []byte("ping")})
	if after.Load() != 1 || plain.Load() != 0 || string(got) != "ping" {
		t.Fatalf("small batch: after %d, plain %d, read %q; want 1, 0, \"ping\"", after.Load(), plain.Load(), got)
	}
	var bulk [][]byte
	seq := uint32(nearWrap + 5)
	for range 20 {
		bulk = append(bulk, h.build(seg{seq: seq, ack: iss + 1, flags: packet.ACK, data: make([]byte, 1000)}))
		seq += 1000
	}
	if err := h.e.DeliverInbound(bulk); err != nil {
		t.Fatal(err)
	}
	if after.Load() != 1 || plain.Load() == 0 {
		t.Fatalf("bulk batch: after %d, plain %d; want the plain notify only", after.Load(), plain.Load())
	}
}
