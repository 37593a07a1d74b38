package tcp

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// The buffers' memory: allocated as data is buffered, within the sizes
// the Config allows, and released when a direction ends or the
// connection goes quiet (buffer.go).

// wantNoBufferMemory fails unless the TCB holds no buffer storage.
func wantNoBufferMemory(t *testing.T, tcb *TCB) {
	t.Helper()
	if a, b := tcb.sndBuf.allocated(), tcb.rcvBuf.allocated(); a != 0 || b != 0 || tcb.scratch != nil {
		t.Fatalf("send buffer holds %d bytes, receive buffer %d, scratch %d; want none", a, b, len(tcb.scratch))
	}
}

// readAll reads what the TCB has buffered.
func readAll(tcb *TCB) []byte {
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, _ := tcb.Read(buf)
		if n == 0 {
			return got
		}
		got = append(got, buf[:n]...)
	}
}

func TestBuffers_NothingAllocatedUntilDataFlows(t *testing.T) {
	h := established(t)
	wantNoBufferMemory(t, h.tcb)
	if h.tcb.ooo != nil || h.tcb.sb != nil {
		t.Fatal("out-of-order ranges or scoreboard allocated without data")
	}
	if w := h.tcb.rcvWnd(); w == 0 {
		t.Fatal("no window advertised without buffer memory")
	}
}

func TestBuffers_SendStorageDoublesUpToSendBufSize(t *testing.T) {
	h := established(t, func(c *Config) { c.SendBufSize = 64 << 10 })
	h.tcb.Write(pattern(0, 100))
	if a := h.tcb.sndBuf.allocated(); a != minRingAlloc {
		t.Fatalf("100 bytes allocated %d, want %d", a, minRingAlloc)
	}
	h.tcb.Write(pattern(100, 3000))
	if a := h.tcb.sndBuf.allocated(); a != 4096 {
		t.Fatalf("3100 bytes allocated %d, want 4096", a)
	}
	n, _ := h.tcb.Write(pattern(3100, 100<<10))
	if n != 64<<10-3100 || h.tcb.sndBuf.allocated() != 64<<10 {
		t.Fatalf("wrote %d, allocated %d; want the buffer full at 64 KiB", n, h.tcb.sndBuf.allocated())
	}
}

// The window is what the Config says, not what is allocated: data
// anywhere in it is stored, growing the storage on arrival.
func TestBuffers_OutOfOrderDataAtTheWindowEdgeIsStored(t *testing.T) {
	h := established(t, func(c *Config) { c.RecvBufSize, c.RecvBufMax = 256<<10, 256<<10 })
	h.in(h.data(pattern(0, 1000)))
	h.advance(time.Second) // the delayed ACK announces the scaled window
	wnd := int(h.tcb.rcvWnd())
	if wnd < 200<<10 {
		t.Fatalf("window %d, want about 256 KiB", wnd)
	}
	stream := pattern(0, 1000+wnd)
	base := h.peerNxt
	far := h.ack()
	far.Seq, far.Payload = base.Add(uint32(wnd-1000)), stream[wnd:]
	h.in(far)
	if h.tcb.ooo.count() != 1 || h.tcb.rcvBuf.allocated() < wnd {
		t.Fatalf("%d ranges, %d bytes allocated: segment at the window's edge not stored", h.tcb.ooo.count(), h.tcb.rcvBuf.allocated())
	}
	for off := 1000; off < wnd; off += 1400 {
		h.in(h.data(stream[off:min(off+1400, wnd)]))
	}
	if got := readAll(h.tcb); !bytes.Equal(got, stream) {
		t.Fatalf("read %d bytes, want %d (mismatch)", len(got), len(stream))
	}
}

func TestBuffers_TimeWaitHoldsNoBuffers(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, 5000)))
	readAll(h.tcb)
	h.sent(5000)
	h.in(h.ack())
	h.tcb.CloseWrite()
	h.output()
	h.in(h.ack())
	h.in(h.fin())
	h.wantState(TimeWait)
	wantNoBufferMemory(t, h.tcb)
	if h.tcb.ooo != nil || h.tcb.sb != nil {
		t.Fatal("TIME-WAIT keeps out-of-order ranges or the scoreboard")
	}
}

func TestBuffers_UnreadDataSurvivesTimeWaitAndIsReleasedOnceRead(t *testing.T) {
	h := finWait2(t)
	want := pattern(0, 3000)
	h.in(h.data(want))
	h.in(h.fin())
	h.wantState(TimeWait)
	if got := readAll(h.tcb); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes in TIME-WAIT, want %d", len(got), len(want))
	}
	wantNoBufferMemory(t, h.tcb)
	if _, err := h.tcb.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("Read after the data: %v, want EOF", err)
	}
}

func TestBuffers_ReceiveBufferReleasedOnceReadAfterPeerFIN(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, 3000)))
	h.in(h.fin())
	h.wantState(CloseWait)
	if h.tcb.rcvBuf.allocated() == 0 {
		t.Fatal("unread data without buffer memory")
	}
	readAll(h.tcb)
	if a := h.tcb.rcvBuf.allocated(); a != 0 {
		t.Fatalf("receive buffer keeps %d bytes after the peer's FIN and the last read", a)
	}
}

func TestBuffers_SendBufferReleasedOnceDataAckedAfterCloseWrite(t *testing.T) {
	h := established(t)
	h.sent(3000)
	h.tcb.CloseWrite()
	h.output()
	if h.tcb.sndBuf.allocated() == 0 {
		t.Fatal("unacknowledged data without buffer memory")
	}
	h.in(h.ack())
	h.wantState(FinWait2)
	if a := h.tcb.sndBuf.allocated(); a != 0 {
		t.Fatalf("send buffer keeps %d bytes after CloseWrite and the last ACK", a)
	}
}

func TestBuffers_CloseReadReleasesAndLaterDataIsNotStored(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, 3000)))
	hole := h.data(pattern(3000, 1000)) // held back: a hole
	h.in(h.data(pattern(4000, 1000)))
	h.tcb.CloseRead()
	if a := h.tcb.rcvBuf.allocated(); a != 0 {
		t.Fatalf("receive buffer keeps %d bytes after CloseRead", a)
	}
	h.take()
	h.in(hole)
	h.in(h.data(pattern(5000, 1000)))
	if a := h.tcb.rcvBuf.allocated(); a != 0 {
		t.Fatalf("data after CloseRead allocated %d bytes", a)
	}
	if h.tcb.rcvNxt != h.peerNxt || h.tcb.ooo.count() != 0 {
		t.Fatalf("RCV.NXT %d short of %d with %d ranges: data after CloseRead not acknowledged",
			h.peerNxt-h.tcb.rcvNxt, 0, h.tcb.ooo.count())
	}
}

func TestBufferIdle_ReleasesEmptyBuffersAfterAQuietPeriod(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, 100)))
	readAll(h.tcb)
	h.sent(100)
	h.in(h.ack())
	h.advance(500 * time.Millisecond)
	if h.tcb.sndBuf.allocated() == 0 || h.tcb.rcvBuf.allocated() == 0 {
		t.Fatal("buffers released before BufferIdle passed")
	}
	for range 3 {
		h.advance(time.Second)
	}
	wantNoBufferMemory(t, h.tcb)
	if d := h.tcb.Deadline(); d != 0 {
		t.Fatalf("timer armed at +%v once the buffers are released", d.Sub(h.now))
	}
	// Memory comes back with data.
	h.in(h.data(pattern(100, 100)))
	if got := readAll(h.tcb); !bytes.Equal(got, pattern(100, 100)) {
		t.Fatal("data after the release lost")
	}
}

func TestBufferIdle_KeepsMemoryWhileDataFlows(t *testing.T) {
	h := established(t)
	for i := range 20 {
		h.in(h.data(pattern(i*100, 100)))
		readAll(h.tcb)
		h.output()
		h.advance(400 * time.Millisecond)
		if h.tcb.rcvBuf.allocated() == 0 {
			t.Fatalf("receive buffer released at exchange %d while data flows every 400ms", i)
		}
	}
}

func TestBufferIdle_KeepsBufferWithOutOfOrderData(t *testing.T) {
	h := established(t)
	stream := pattern(0, 3000)
	base := h.peerNxt
	s := h.ack()
	s.Seq, s.Payload = base.Add(1000), stream[1000:]
	h.in(s)
	for range 5 {
		h.advance(time.Second)
	}
	if h.tcb.rcvBuf.allocated() == 0 || h.tcb.ooo.count() != 1 {
		t.Fatal("out-of-order data released while it waits for the hole")
	}
	h.in(h.data(stream[:1000]))
	if got := readAll(h.tcb); !bytes.Equal(got, stream) {
		t.Fatalf("read %d bytes, want %d (mismatch)", len(got), len(stream))
	}
}

func TestBufferIdle_NegativeKeepsMemory(t *testing.T) {
	h := established(t, func(c *Config) { c.BufferIdle = -1 })
	h.in(h.data(pattern(0, 100)))
	readAll(h.tcb)
	h.output()
	h.advance(time.Second) // the delayed ACK
	if d := h.tcb.Deadline(); d != 0 {
		t.Fatalf("timer armed at +%v with BufferIdle < 0", d.Sub(h.now))
	}
	h.advance(time.Minute)
	if h.tcb.rcvBuf.allocated() == 0 {
		t.Fatal("buffer released with BufferIdle < 0")
	}
}

// Buffers released and allocated again all through a transfer with loss
// and reordering: storage moves, out-of-order data and the scoreboard
// come and go, and every byte still arrives.
func TestPair_TransferWithBuffersReleasedWhenIdle(t *testing.T) {
	p := newPair(t, 6, func(c *Config) { c.BufferIdle = time.Millisecond })
	l := link{loss: 0.02, reorder: 0.1, delay: 3 * time.Millisecond, jitter: 10 * time.Millisecond}
	p.links = [2]link{l, l}
	p.transfer(512<<10, 256<<10, 10*time.Minute)
	if p.stats[1].OutOfOrder.Load() == 0 || p.stats[0].Retransmits.Load() == 0 {
		t.Fatal("no reordering or loss happened: the test tests nothing")
	}
}
