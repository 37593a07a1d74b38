package tcp

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/tungate/tungate/internal/packet"
)

// TestConn_TryWriteFromFillsTheSendBufferInPlace: the reader gets free
// send-buffer space, what it fills goes out, io.EOF queues the FIN on the
// last data, a full buffer gives EAGAIN without calling the reader, and
// the reader's own error comes back as it is.
func TestConn_TryWriteFromFillsTheSendBufferInPlace(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.TCB.SendBufSize = 4000 })
	sc, iss := h.establish(nearWrap)
	c := sc.(*Conn)
	h.take()

	offered := 0
	n, err := c.TryWriteFrom(func(p []byte) (int, error) {
		offered = len(p)
		return copy(p, "hello"), nil
	})
	if n != 5 || err != nil || offered != minRingAlloc {
		t.Fatalf("TryWriteFrom = %d, %v with %d bytes offered; want 5, nil, %d (the least storage)", n, err, offered, minRingAlloc)
	}
	if g := h.expectOne("data"); string(g.data) != "hello" || g.seq != iss+1 {
		t.Fatalf("sent %q at %d", g.data, g.seq-iss)
	}
	// Fill the rest; then the buffer is full and the reader is not called.
	total := 5
	for total < 4000 {
		n, err := c.TryWriteFrom(func(p []byte) (int, error) { return copy(p, bytes.Repeat([]byte("x"), len(p))), nil })
		if err != nil || n == 0 {
			t.Fatalf("filling: %d, %v at %d", n, err, total)
		}
		total += n
	}
	if n, err := c.TryWriteFrom(func(p []byte) (int, error) { t.Fatal("reader called on a full buffer"); return 0, nil }); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("full buffer: %d, %v; want 0, EAGAIN", n, err)
	}
	// The reader's error is returned unwrapped, after its data.
	boom := errors.New("boom")
	var sent uint32
	for _, g := range h.take() {
		sent = max(sent, g.seq+uint32(len(g.data))-(iss+1))
	}
	if sent == 0 {
		t.Fatal("nothing of the buffered data sent")
	}
	h.send(seg{seq: nearWrap + 1, ack: iss + 1 + sent, flags: packet.ACK})
	if n, err := c.TryWriteFrom(func(p []byte) (int, error) { return copy(p, "ab"), boom }); n != 2 || err != boom {
		t.Fatalf("reader error: %d, %v; want 2, boom", n, err)
	}
	h.take()
	// io.EOF: the data and the FIN on one segment.
	if n, err := c.TryWriteFrom(func(p []byte) (int, error) { return copy(p, "bye"), io.EOF }); n != 3 || err != io.EOF {
		t.Fatalf("with EOF: %d, %v", n, err)
	}
	var fin *got
	for _, g := range h.take() {
		if g.flags&packet.FIN != 0 {
			fin = &g
		}
	}
	if fin == nil || !bytes.HasSuffix(fin.data, []byte("bye")) {
		t.Fatalf("FIN segment %+v, want it to carry the last data", fin)
	}
	if _, err := c.TryWriteFrom(func(p []byte) (int, error) { return 0, nil }); err == nil || errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("after the FIN: %v, want the Conn's write error", err)
	}
}

// TestConn_TryReadToHandsTheReceiveBufferOver: the writer gets the
// buffered data in place, what it takes is consumed, a short take leaves
// the rest, last marks the data before the FIN, and the FIN itself comes
// back as io.EOF.
func TestConn_TryReadToHandsTheReceiveBufferOver(t *testing.T) {
	h := newPktHarness(t, nil)
	sc, iss := h.establish(nearWrap)
	c := sc.(*Conn)
	h.take()
	if n, err := c.TryReadTo(func(p []byte, last bool) (int, error) { t.Fatal("writer called with nothing"); return 0, nil }); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("nothing buffered: %d, %v; want 0, EAGAIN", n, err)
	}
	h.send(seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK, data: []byte("0123456789")})
	// Take 4: the rest stays.
	var seen []byte
	n, err := c.TryReadTo(func(p []byte, last bool) (int, error) {
		seen = append(seen, p...)
		if last {
			t.Error("last before any FIN")
		}
		return 4, syscall.EAGAIN
	})
	if n != 4 || err != syscall.EAGAIN || string(seen) != "0123456789" {
		t.Fatalf("short take: %d, %v, offered %q", n, err, seen)
	}
	// The FIN arrives; the rest is offered as last and taken, then EOF.
	h.send(seg{seq: nearWrap + 11, ack: iss + 1, flags: packet.ACK | packet.FIN})
	var rest []byte
	var lastSeen bool
	n, err = c.TryReadTo(func(p []byte, last bool) (int, error) {
		rest, lastSeen = append(rest, p...), last
		return len(p), nil
	})
	if n != 6 || err != io.EOF || string(rest) != "456789" || !lastSeen {
		t.Fatalf("after the FIN: %d, %v, %q, last %v; want 6, EOF, \"456789\", true", n, err, rest, lastSeen)
	}
	if n, err := c.TryReadTo(func(p []byte, last bool) (int, error) { t.Fatal("writer called at EOF"); return 0, nil }); n != 0 || err != io.EOF {
		t.Fatalf("at EOF: %d, %v", n, err)
	}
}

// A ring whose contents wrap offers the free run from the end of the
// contents up to head, and hands the contents over in two runs.
func TestRing_WriteFromAndHeadRunAcrossTheWrap(t *testing.T) {
	r := newRing(4096)
	fill := func(c byte) int {
		n, _ := r.writeFrom(func(p []byte) (int, error) { return copy(p, bytes.Repeat([]byte{c}, len(p))), nil })
		return n
	}
	if n := fill('a'); n != minRingAlloc {
		t.Fatalf("first run %d, want %d: a small start", n, minRingAlloc)
	}
	if n := fill('a'); n != minRingAlloc {
		t.Fatalf("second run %d, want %d: the storage doubled once it was full", n, minRingAlloc)
	}
	for r.free() > 0 {
		fill('a')
	}
	if len(r.buf) != 4096 {
		t.Fatalf("storage %d, want 4096", len(r.buf))
	}
	r.discard(3000)
	if n := fill('b'); n != 3000 {
		t.Fatalf("run after the wrap %d, want 3000 (up to head)", n)
	}
	if n, _ := r.writeFrom(func(p []byte) (int, error) { t.Fatal("reader called on a full ring"); return 0, nil }); n != 0 {
		t.Fatal(n)
	}
	var runs []int
	var all []byte
	for r.len() > 0 {
		p := r.headRun()
		runs = append(runs, len(p))
		all = append(all, p...)
		r.discard(len(p))
	}
	want := append(bytes.Repeat([]byte("a"), 1096), bytes.Repeat([]byte("b"), 3000)...)
	if !bytes.Equal(all, want) || len(runs) != 2 || runs[0] != 1096 {
		t.Fatalf("runs %v, contents as written %v", runs, bytes.Equal(all, want))
	}
}

// A small message and the read that finds nothing after it leave the
// storage at its minimum: what an idle connection holds.
func TestRing_WriteFromKeepsSmallMessagesSmall(t *testing.T) {
	r := newRing(1 << 20)
	r.writeFrom(func(p []byte) (int, error) { return copy(p, "ping"), nil })
	r.writeFrom(func(p []byte) (int, error) { return 0, syscall.EAGAIN })
	if r.allocated() != minRingAlloc || r.len() != 4 {
		t.Fatalf("storage %d holding %d bytes, want %d holding 4", r.allocated(), r.len(), minRingAlloc)
	}
}
