package faulty

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/tun"
	"github.com/tungate/tungate/tun/tuntest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const hr = stack.Headroom

// packetN is a 40-byte test packet carrying n in its first two bytes.
func packetN(n int) []byte {
	p := make([]byte, 40)
	binary.BigEndian.PutUint16(p, uint16(n))
	for i := 2; i < len(p); i++ {
		p[i] = byte(n*7 + i)
	}
	return p
}

func idOf(p []byte) int { return int(binary.BigEndian.Uint16(p)) }

// withHeadroom returns p behind hr bytes of headroom, as a writer passes it.
func withHeadroom(p []byte) []byte { return append(make([]byte, hr), p...) }

func readBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, hr+1500)
	}
	return bufs, make([]int, n)
}

// readResult is what startRead read.
type readResult struct {
	pkts [][]byte
	err  error
}

// startRead reads d in the background until it has n packets or a Read
// fails. It never touches a testing.T: goroutines other than the test's
// must not call t.Fatal.
func startRead(d *Device, batch, n int) <-chan readResult {
	done := make(chan readResult, 1)
	go func() {
		bufs, sizes := readBufs(batch)
		var got [][]byte
		for len(got) < n {
			k, err := d.Read(bufs, sizes, hr)
			for i := range k {
				got = append(got, slices.Clone(bufs[i][hr:hr+sizes[i]]))
			}
			if err != nil {
				done <- readResult{got, err}
				return
			}
		}
		done <- readResult{got, nil}
	}()
	return done
}

// awaitRead returns what startRead read, failing on a Read error or after
// a few seconds.
func awaitRead(t *testing.T, d *Device, done <-chan readResult, n int) [][]byte {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Read after %d packets: %v", len(r.pkts), r.err)
		}
		return r.pkts
	case <-time.After(5 * time.Second):
		d.Close() // unblocks the reader, so that it does not leak
		<-done
		t.Fatalf("timed out waiting for %d packets", n)
		return nil
	}
}

// readN reads until it has n packets, failing after a few seconds.
func readN(t *testing.T, d *Device, batch, n int) [][]byte {
	t.Helper()
	return awaitRead(t, d, startRead(d, batch, n), n)
}

// written returns the next n packets the device wrote to dev.
func written(t *testing.T, dev *tuntest.Device, n int) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got [][]byte
	for range n {
		p, err := dev.Next(ctx)
		if err != nil {
			t.Fatalf("after %d written packets: %v", len(got), err)
		}
		got = append(got, p)
	}
	return got
}

// noneWritten checks that nothing more was written to dev.
func noneWritten(t *testing.T, dev *tuntest.Device) {
	t.Helper()
	select {
	case p := <-dev.Outbound():
		t.Fatalf("unexpected packet %d written", idOf(p))
	default:
	}
}

// eventually waits for cond, which a goroutine of the Device makes true.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// armedAt waits until the manual clock has a timer pending, and returns
// when it is due.
func armedAt(t *testing.T, clk *clock.Manual) clock.Time {
	t.Helper()
	var at clock.Time
	eventually(t, "a timer is armed", func() bool {
		var ok bool
		at, ok = clk.Next()
		return ok
	})
	return at
}

func ids(pkts [][]byte) []int {
	out := make([]int, len(pkts))
	for i, p := range pkts {
		out[i] = idOf(p)
	}
	return out
}

func writeEach(t *testing.T, d *Device, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if n, err := d.Write([][]byte{withHeadroom(packetN(i))}, hr); n != 1 || err != nil {
			t.Fatalf("Write packet %d = %d, %v", i, n, err)
		}
	}
}

func TestZeroConfig_PassesBytesThroughUnchanged(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{})
	defer d.Close()
	if d.in != nil || d.out != nil {
		t.Fatal("a zero Config set up a fault stage")
	}
	for i := range 5 {
		inner.Inject(packetN(i))
	}
	got := readN(t, d, 8, 5)
	for i, p := range got {
		if !bytes.Equal(p, packetN(i)) {
			t.Errorf("read packet %d = %x, want %x", i, p, packetN(i))
		}
	}
	bufs := [][]byte{withHeadroom(packetN(10)), withHeadroom(packetN(11))}
	if n, err := d.Write(bufs, hr); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	for i, p := range written(t, inner, 2) {
		if !bytes.Equal(p, packetN(10+i)) {
			t.Errorf("written packet %d = %x, want %x", i, p, packetN(10+i))
		}
	}
	if s := d.Stats(); s != (Stats{}) {
		t.Errorf("Stats = %+v, want zero", s)
	}
}

func TestLossOne_DropsEverythingBothWays(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Loss: 1})
	for i := range 50 {
		inner.Inject(packetN(i))
	}
	writeEach(t, d, 0, 50)
	noneWritten(t, inner)
	eventually(t, "all inbound packets were seen", func() bool { return d.Stats().Inbound.Packets == 50 })

	readErr := make(chan error, 1)
	go func() {
		bufs, sizes := readBufs(4)
		n, err := d.Read(bufs, sizes, hr)
		if n > 0 {
			err = errors.New("read a packet")
		}
		readErr <- err
	}()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-readErr; !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read = %v, want os.ErrClosed and no packet", err)
	}
	s := d.Stats()
	want := DirStats{Packets: 50, Dropped: 50}
	if s.Inbound != want || s.Outbound != want {
		t.Errorf("Stats = %+v, want %+v each way", s, want)
	}
}

func TestInbound_DuplicatesSpillIntoLaterReads(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Duplicate: 1, Directions: Inbound})
	defer d.Close()
	for i := range 3 {
		inner.Inject(packetN(i))
	}
	got := readN(t, d, 1, 6) // one buffer per Read: each duplicate needs its own
	if want := []int{0, 0, 1, 1, 2, 2}; !slices.Equal(ids(got), want) {
		t.Errorf("read %v, want %v", ids(got), want)
	}
	for _, p := range got {
		if !bytes.Equal(p, packetN(idOf(p))) {
			t.Errorf("packet %d corrupted: %x", idOf(p), p)
		}
	}
	if s := d.Stats().Inbound; s.Duplicated != 3 || s.Delivered != 6 {
		t.Errorf("Stats = %+v, want 3 duplicated and 6 delivered", s)
	}
}

func TestInbound_ReorderKeepsEveryPacket(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Seed: 7, Reorder: 0.3, ReorderDepth: 2, Directions: Inbound})
	defer d.Close()
	const n = 300
	for i := range n {
		inner.Inject(packetN(i))
	}
	got := ids(readN(t, d, 8, n))
	if slices.IsSorted(got) {
		t.Error("the packets came in their original order")
	}
	sorted := slices.Sorted(slices.Values(got))
	for i, id := range sorted {
		if id != i {
			t.Fatalf("packets read, sorted, are %v...: not each of 0..%d once", sorted[:i+1], n-1)
		}
	}
	s := d.Stats().Inbound
	if s.Reordered == 0 || s.Delivered != n || s.Pending != 0 {
		t.Errorf("Stats = %+v, want some reordered and all %d delivered", s, n)
	}
	checkBalance(t, s)
}

func TestInbound_HeldLastPacketComesAtTimeout(t *testing.T) {
	clk := clock.NewManual(0)
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Reorder: 1, ReorderTimeout: 50 * time.Millisecond, Directions: Inbound, Clock: clk})
	defer d.Close()
	inner.Inject(packetN(1))
	got := startRead(d, 4, 1)
	at := armedAt(t, clk)
	if at != clock.Time(50*time.Millisecond) {
		t.Fatalf("Read waits until %v, want the 50ms timeout", at)
	}
	select {
	case r := <-got:
		t.Fatalf("read %v before the timeout", ids(r.pkts))
	default:
	}
	clk.Set(at)
	if p := awaitRead(t, d, got, 1); !slices.Equal(ids(p), []int{1}) {
		t.Errorf("read %v, want [1]", ids(p))
	}
}

func TestInbound_DelayedPacketComesWhenDue(t *testing.T) {
	clk := clock.NewManual(0)
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Delay: 20 * time.Millisecond, Directions: Inbound, Clock: clk})
	defer d.Close()
	inner.Inject(packetN(3))
	got := startRead(d, 4, 1)
	if at := armedAt(t, clk); at != clock.Time(20*time.Millisecond) {
		t.Fatalf("Read waits until %v, want 20ms", at)
	}
	clk.Advance(19 * time.Millisecond)
	select {
	case r := <-got:
		t.Fatalf("read %v before the delay passed", ids(r.pkts))
	default:
	}
	clk.Advance(time.Millisecond)
	if p := awaitRead(t, d, got, 1); !slices.Equal(ids(p), []int{3}) {
		t.Errorf("read %v, want [3]", ids(p))
	}
	if s := d.Stats().Inbound; s.Delayed != 1 || s.Delivered != 1 {
		t.Errorf("Stats = %+v, want 1 delayed and delivered", s)
	}
}

func TestInbound_PacketLargerThanBufferIsReported(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Delay: time.Nanosecond, Directions: Inbound})
	defer d.Close()
	inner.Inject(make([]byte, 100))
	inner.Inject(packetN(1))
	eventually(t, "both packets were seen", func() bool { return d.Stats().Inbound.Packets == 2 })
	bufs, sizes := [][]byte{make([]byte, hr+50)}, []int{0}
	var n int
	var err error
	for n == 0 && err == nil { // the delay may not have passed yet
		n, err = d.Read(bufs, sizes, hr)
	}
	if n != 0 || !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("Read = %d, %v; want io.ErrShortBuffer", n, err)
	}
	if got := readN(t, d, 1, 1); idOf(got[0]) != 1 {
		t.Errorf("next Read gave packet %d, want 1", idOf(got[0]))
	}
	if s := d.Stats().Inbound; s.Discarded != 1 || s.Delivered != 1 {
		t.Errorf("Stats = %+v, want 1 discarded and 1 delivered", s)
	}
}

// errOnce is a device whose next Read returns its packets with err.
type errOnce struct {
	*tuntest.Device
	mu  sync.Mutex
	err error
}

func (e *errOnce) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := e.Device.Read(bufs, sizes, offset)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil && e.err != nil {
		err, e.err = e.err, nil
	}
	return n, err
}

func TestInbound_ReadErrorIsPassedOnWithItsPackets(t *testing.T) {
	boom := errors.New("segments lost")
	inner := &errOnce{Device: tuntest.New(1500), err: boom}
	d := mustWrap(t, inner, Config{Duplicate: 1, Directions: Inbound})
	defer d.Close()
	inner.Inject(packetN(1))
	bufs, sizes := readBufs(4)
	n, err := d.Read(bufs, sizes, hr)
	for n < 2 && err == nil { // the pump may hand over the packets before the error
		var k int
		k, err = d.Read(bufs[n:], sizes[n:], hr)
		n += k
	}
	if !errors.Is(err, boom) {
		t.Fatalf("Read = %d, %v; want the wrapped device's error", n, err)
	}
	if n += len(readN(t, d, 4, 2-n)); n != 2 {
		t.Errorf("got %d packets around the error, want the 2 copies", n)
	}
}

func TestInbound_WrappedDeviceClosingReleasesHeldPackets(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Reorder: 1, ReorderTimeout: time.Hour, Directions: Inbound})
	defer d.Close()
	inner.Inject(packetN(1))
	inner.Inject(packetN(2))
	eventually(t, "both packets are held", func() bool { return d.Stats().Inbound.Reordered == 2 })
	inner.Close()
	if got := ids(readN(t, d, 4, 2)); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("read %v, want [1 2]", got)
	}
	bufs, sizes := readBufs(4)
	if _, err := d.Read(bufs, sizes, hr); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after the wrapped device closed = %v, want os.ErrClosed", err)
	}
}

func TestOutbound_HeldPacketIsCopiedAndFlushedAtTimeout(t *testing.T) {
	clk := clock.NewManual(0)
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Reorder: 1, ReorderTimeout: 30 * time.Millisecond, Directions: Outbound, Clock: clk})
	defer d.Close()
	buf := withHeadroom(packetN(1))
	if n, err := d.Write([][]byte{buf}, hr); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	copy(buf[hr:], packetN(2)) // the caller reuses its buffer
	if n, err := d.Write([][]byte{buf}, hr); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	noneWritten(t, inner)
	clk.Advance(29 * time.Millisecond)
	noneWritten(t, inner)
	clk.Advance(time.Millisecond)
	got := written(t, inner, 2)
	if !bytes.Equal(got[0], packetN(1)) || !bytes.Equal(got[1], packetN(2)) {
		t.Errorf("flushed %v, want packets 1 and 2 intact", ids(got))
	}
}

func TestOutbound_ReorderSwapsNeighbours(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Reorder: 0.5, Directions: Outbound})
	defer d.Close()
	d.out.mu.Lock()
	d.out.script = scripted(verdict{hold: true}, verdict{}, verdict{}, verdict{dup: true})
	d.out.mu.Unlock()
	writeEach(t, d, 0, 2)
	bufs := [][]byte{withHeadroom(packetN(2)), withHeadroom(packetN(3))}
	if n, err := d.Write(bufs, hr); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got, want := ids(written(t, inner, 5)), []int{1, 0, 2, 3, 3}; !slices.Equal(got, want) {
		t.Errorf("written %v, want %v", got, want)
	}
	noneWritten(t, inner)
	s := d.Stats().Outbound
	if want := (DirStats{Packets: 4, Reordered: 1, Duplicated: 1, Delivered: 5}); s != want {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
}

func TestOutbound_DelayWritesWhenDue(t *testing.T) {
	clk := clock.NewManual(0)
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Delay: 40 * time.Millisecond, Directions: Outbound, Clock: clk})
	defer d.Close()
	writeEach(t, d, 0, 1)
	clk.Advance(10 * time.Millisecond)
	writeEach(t, d, 1, 2)
	clk.Advance(29 * time.Millisecond)
	noneWritten(t, inner)
	clk.Advance(time.Millisecond)
	if got := ids(written(t, inner, 1)); !slices.Equal(got, []int{0}) {
		t.Errorf("at 40ms written %v, want [0]", got)
	}
	noneWritten(t, inner)
	clk.Advance(10 * time.Millisecond)
	if got := ids(written(t, inner, 1)); !slices.Equal(got, []int{1}) {
		t.Errorf("at 50ms written %v, want [1]", got)
	}
}

func TestOutbound_SameSeedWritesTheSameSequence(t *testing.T) {
	run := func() ([]int, DirStats) {
		inner := tuntest.New(1500)
		d := mustWrap(t, inner, Config{Seed: 42, Loss: 0.1, Duplicate: 0.1, Reorder: 0.1, ReorderTimeout: time.Hour, Directions: Outbound})
		writeEach(t, d, 0, 500)
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		s := d.Stats().Outbound
		checkBalance(t, s)
		got := ids(written(t, inner, int(s.Delivered)))
		noneWritten(t, inner)
		return got, s
	}
	a, sa := run()
	b, sb := run()
	if !slices.Equal(a, b) || sa != sb {
		t.Error("two runs with seed 42 wrote different sequences")
	}
	if sa.Dropped == 0 || sa.Duplicated == 0 || sa.Reordered == 0 || slices.IsSorted(a) {
		t.Errorf("Stats = %+v, sorted %v: the faults did not show", sa, slices.IsSorted(a))
	}
}

func TestClose_WritesHeldAndDelayedPackets(t *testing.T) {
	clk := clock.NewManual(0)
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Reorder: 0.5, Delay: time.Hour, Directions: Outbound, Clock: clk})
	d.out.mu.Lock()
	d.out.script = scripted(verdict{delay: time.Hour}, verdict{hold: true, delay: time.Hour}, verdict{delay: 2 * time.Hour})
	d.out.mu.Unlock()
	writeEach(t, d, 0, 3)
	noneWritten(t, inner)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := ids(written(t, inner, 3)); !slices.Equal(got, []int{0, 2, 1}) {
		t.Errorf("Close wrote %v, want [0 2 1]", got)
	}
	s := d.Stats().Outbound
	if s.Delivered != 3 || s.Pending != 0 {
		t.Errorf("Stats = %+v, want all 3 delivered", s)
	}
	if clk.Pending() != 0 {
		t.Errorf("%d timers still pending after Close", clk.Pending())
	}
	if _, err := d.Write([][]byte{withHeadroom(packetN(9))}, hr); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want os.ErrClosed", err)
	}
}

func TestClose_UnblocksReadAndCountsUnreadAsDiscarded(t *testing.T) {
	clk := clock.NewManual(0)
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Delay: time.Second, Directions: Inbound, Clock: clk})
	inner.Inject(packetN(1))
	readErr := make(chan error, 1)
	go func() {
		bufs, sizes := readBufs(4)
		_, err := d.Read(bufs, sizes, hr)
		readErr <- err
	}()
	armedAt(t, clk)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-readErr; !errors.Is(err, os.ErrClosed) {
		t.Errorf("blocked Read = %v, want os.ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s := d.Stats().Inbound
	if want := (DirStats{Packets: 1, Delayed: 1, Discarded: 1}); s != want {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
}

func TestStats_AddUpUnderConcurrentTraffic(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{
		Seed: 3, Loss: 0.05, Duplicate: 0.05, Reorder: 0.1, ReorderDepth: 3,
		Delay: 100 * time.Microsecond, Jitter: 100 * time.Microsecond,
	})
	const perWriter, writers, inbound = 200, 4, 500
	for i := range inbound {
		inner.Inject(packetN(i))
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				bufs := [][]byte{withHeadroom(packetN(w*perWriter + i))}
				if _, err := d.Write(bufs, hr); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		})
	}
	readDone := make(chan int)
	go func() {
		bufs, sizes := readBufs(8)
		total := 0
		for {
			n, err := d.Read(bufs, sizes, hr)
			total += n
			if err != nil {
				readDone <- total
				return
			}
		}
	}()
	wg.Wait()
	eventually(t, "all inbound packets were seen", func() bool { return d.Stats().Inbound.Packets == inbound })
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	read := <-readDone
	s := d.Stats()
	checkBalance(t, s.Inbound)
	checkBalance(t, s.Outbound)
	if s.Inbound.Pending != 0 || s.Outbound.Pending != 0 {
		t.Errorf("packets pending after Close: %+v", s)
	}
	if uint64(read) != s.Inbound.Delivered {
		t.Errorf("read %d packets, Stats say %d delivered", read, s.Inbound.Delivered)
	}
	if got := len(inner.Outbound()); uint64(got) != s.Outbound.Delivered {
		t.Errorf("%d packets written, Stats say %d delivered", got, s.Outbound.Delivered)
	}
	if s.Outbound.Packets != perWriter*writers {
		t.Errorf("Outbound.Packets = %d, want %d", s.Outbound.Packets, perWriter*writers)
	}
}

func TestReadLoop_ReadsThroughTheFaultsAndClosesOnCancel(t *testing.T) {
	inner := tuntest.New(1500)
	d := mustWrap(t, inner, Config{Seed: 5, Loss: 0.1, Duplicate: 0.3, Reorder: 0.1, Directions: Inbound})
	for i := range 100 {
		inner.Inject(packetN(i))
	}
	var mu sync.Mutex
	got := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tun.ReadLoop(ctx, d, func(pkts [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range pkts {
				if !bytes.Equal(p, packetN(idOf(p))) {
					t.Errorf("packet %d corrupted", idOf(p))
				}
			}
			got += len(pkts)
			return nil
		})
	}()
	eventually(t, "every packet was delivered", func() bool {
		s := d.Stats().Inbound
		mu.Lock()
		defer mu.Unlock()
		return s.Packets == 100 && s.Pending == 0 && uint64(got) == s.Delivered
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ReadLoop = %v, want nil after cancel", err)
	}
	s := d.Stats().Inbound
	if s.Dropped == 0 || s.Duplicated == 0 || s.Reordered == 0 {
		t.Errorf("Stats = %+v: some fault did not show", s)
	}
	checkBalance(t, s)
}
