package tuntest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/tun/tuntest"
)

const headroom = stack.Headroom

func readBufs(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, headroom+size)
	}
	return bufs, make([]int, n)
}

// within fails the test if fn does not return in time.
func within(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return")
	}
}

func TestRead_ReturnsInjectedPacketsInOrderAtMostBatchSize(t *testing.T) {
	d := tuntest.NewWithBatchSize(1500, 3)
	for i := range 5 {
		d.Inject([]byte{byte(i), 0xee})
	}
	bufs, sizes := readBufs(8, 1500)
	var got []byte
	for _, want := range []int{3, 2} {
		n, err := d.Read(bufs, sizes, headroom)
		if n != want || err != nil {
			t.Fatalf("Read = %d, %v; want %d, nil", n, err, want)
		}
		for i := range n {
			if sizes[i] != 2 {
				t.Fatalf("size %d = %d, want 2", i, sizes[i])
			}
			got = append(got, bufs[i][headroom])
		}
	}
	if !bytes.Equal(got, []byte{0, 1, 2, 3, 4}) {
		t.Fatalf("packets in order %v, want 0..4", got)
	}
}

func TestInject_CopiesThePacket(t *testing.T) {
	d := tuntest.New(1500)
	pkt := []byte{1, 2, 3}
	d.Inject(pkt)
	pkt[0] = 9
	bufs, sizes := readBufs(1, 1500)
	if n, err := d.Read(bufs, sizes, headroom); n != 1 || err != nil || bufs[0][headroom] != 1 {
		t.Fatalf("Read = %d, %v, first byte %d; want the bytes as injected", n, err, bufs[0][headroom])
	}
}

func TestRead_BlocksUntilInject(t *testing.T) {
	d := tuntest.New(1500)
	bufs, sizes := readBufs(1, 1500)
	result := make(chan int, 1)
	go func() {
		n, _ := d.Read(bufs, sizes, headroom)
		result <- n
	}()
	d.Inject([]byte{7})
	select {
	case n := <-result:
		if n != 1 || bufs[0][headroom] != 7 {
			t.Fatalf("Read = %d packets, byte %d; want the injected packet", n, bufs[0][headroom])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read stayed blocked after Inject")
	}
}

func TestClose_UnblocksReadWithErrClosed(t *testing.T) {
	d := tuntest.New(1500)
	bufs, sizes := readBufs(1, 1500)
	errc := make(chan error, 1)
	go func() {
		_, err := d.Read(bufs, sizes, headroom)
		errc <- err
	}()
	_ = d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read = %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	d.Inject([]byte{1})
	if _, err := d.Read(bufs, sizes, headroom); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close and Inject = %v, want os.ErrClosed", err)
	}
}

func TestRead_OversizedPacketIsReportedAndDropped(t *testing.T) {
	d := tuntest.New(1500)
	d.Inject([]byte{1})
	d.Inject(make([]byte, 100))
	d.Inject([]byte{3})
	bufs, sizes := readBufs(4, 50)
	if n, err := d.Read(bufs, sizes, headroom); n != 1 || err != nil {
		t.Fatalf("first Read = %d, %v; want the packet before the big one", n, err)
	}
	if n, err := d.Read(bufs, sizes, headroom); n != 0 || !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("second Read = %d, %v; want 0, io.ErrShortBuffer", n, err)
	}
	if n, err := d.Read(bufs, sizes, headroom); n != 1 || err != nil || bufs[0][headroom] != 3 {
		t.Fatalf("third Read = %d, %v; want the packet after the big one", n, err)
	}
}

func TestWrite_QueuesCopiesWithoutHeadroomAndClobbersHeadroom(t *testing.T) {
	d := tuntest.New(1500)
	buf := append(bytes.Repeat([]byte{0xaa}, headroom), 1, 2, 3)
	if n, err := d.Write([][]byte{buf}, headroom); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	buf[headroom] = 9 // the caller reuses its buffer
	got, err := d.Next(t.Context())
	if err != nil || !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Fatalf("Next = %v, %v; want [1 2 3]", got, err)
	}
	if !bytes.Equal(buf[:headroom], make([]byte, headroom)) {
		t.Fatalf("headroom = %x, want it overwritten like a real device does", buf[:headroom])
	}
}

func TestWrite_RejectsOffsetBelowHeadroom(t *testing.T) {
	d := tuntest.New(1500)
	if n, err := d.Write([][]byte{make([]byte, 30)}, headroom-1); n != 0 || err == nil {
		t.Fatalf("Write = %d, %v; want an error", n, err)
	}
	if len(d.Outbound()) != 0 {
		t.Fatal("rejected packet was queued")
	}
}

func TestWrite_BlocksWhenQueueIsFullUntilTestReads(t *testing.T) {
	d := tuntest.New(1500)
	buf := make([]byte, headroom+20)
	for range tuntest.OutboundCap {
		if _, err := d.Write([][]byte{buf}, headroom); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.Write([][]byte{buf}, headroom)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Write returned (%v) with a full queue; it must block, not drop", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := d.Next(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Write stayed blocked after the test read a packet")
	}
	if len(d.Outbound()) != tuntest.OutboundCap {
		t.Fatalf("queue holds %d, want %d: a packet went missing", len(d.Outbound()), tuntest.OutboundCap)
	}
}

func TestClose_UnblocksFullWriteWithErrClosed(t *testing.T) {
	d := tuntest.New(1500)
	buf := make([]byte, headroom+20)
	bufs := make([][]byte, tuntest.OutboundCap+1)
	for i := range bufs {
		bufs[i] = buf
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := d.Write(bufs, headroom)
		done <- result{n, err}
	}()
	// Only a Write blocked on the full queue leaves it full and unfinished.
	for len(d.Outbound()) < tuntest.OutboundCap {
		time.Sleep(time.Millisecond)
	}
	_ = d.Close()
	select {
	case r := <-done:
		if r.n != tuntest.OutboundCap || !errors.Is(r.err, os.ErrClosed) {
			t.Fatalf("Write = %d, %v; want %d, os.ErrClosed", r.n, r.err, tuntest.OutboundCap)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Write")
	}
}

func TestNext_HonoursContextAndReturnsQueuedPacketsAfterClose(t *testing.T) {
	d := tuntest.New(1500)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := d.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next on cancelled ctx = %v, want context.Canceled", err)
	}
	if _, err := d.Write([][]byte{make([]byte, headroom+1)}, headroom); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	if _, err := d.Next(t.Context()); err != nil {
		t.Fatalf("Next after Close with a queued packet = %v, want the packet", err)
	}
	if _, err := d.Next(t.Context()); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Next after Close on empty queue = %v, want os.ErrClosed", err)
	}
}

func TestDevice_ConcurrentInjectReadWriteDeliversEverything(t *testing.T) {
	const n = 2000
	d := tuntest.NewWithBatchSize(1500, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			d.Inject([]byte{byte(i)})
		}
	})
	wg.Go(func() {
		buf := make([]byte, headroom+1)
		for range n {
			if _, err := d.Write([][]byte{buf}, headroom); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for range n {
			if _, err := d.Next(t.Context()); err != nil {
				t.Error(err)
				return
			}
		}
	})
	read := 0
	within(t, func() {
		bufs, sizes := readBufs(16, 1500)
		for read < n {
			got, err := d.Read(bufs, sizes, headroom)
			if err != nil {
				t.Error(err)
				return
			}
			read += got
		}
	})
	wg.Wait()
	if read != n {
		t.Fatalf("read %d packets, want %d", read, n)
	}
}

func TestClose_IsIdempotent(t *testing.T) {
	d := tuntest.New(1500)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}
