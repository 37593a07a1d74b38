package tun_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/tungate/tungate/tun"
	"github.com/tungate/tungate/tun/tuntest"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// testPackets returns n distinct small UDP packets.
func testPackets(t *testing.T, n int) [][]byte {
	t.Helper()
	pkts := make([][]byte, n)
	for i := range pkts {
		src := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(1000+i))
		pkts[i] = udpPacket(t, src, netip.MustParseAddrPort("198.19.0.2:7"), []byte(fmt.Sprint("payload ", i)))
	}
	return pkts
}

// runLoop starts ReadLoop and returns a function that waits for its result.
func runLoop(ctx context.Context, dev tun.Device, deliver func([][]byte) error) func(t *testing.T) error {
	done := make(chan error, 1)
	go func() { done <- tun.ReadLoop(ctx, dev, deliver) }()
	return func(t *testing.T) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("ReadLoop did not return")
			return nil
		}
	}
}

func TestReadLoop_DeliversBatchesOfAtMostBatchSizeStartingAtIPHeader(t *testing.T) {
	dev := tuntest.NewWithBatchSize(1500, 4)
	want := testPackets(t, 6)
	for _, p := range want {
		dev.Inject(p)
	}
	batches := make(chan [][]byte, 10)
	wait := runLoop(t.Context(), dev, func(pkts [][]byte) error {
		cp := make([][]byte, len(pkts))
		for i, p := range pkts {
			cp[i] = bytes.Clone(p)
		}
		batches <- cp
		if len(batches) == 2 {
			return dev.Close()
		}
		return nil
	})
	if err := wait(t); err != nil {
		t.Fatalf("ReadLoop = %v, want nil after Close", err)
	}
	first, second := <-batches, <-batches
	if len(first) != 4 || len(second) != 2 {
		t.Fatalf("batch sizes = %d, %d; want 4, 2", len(first), len(second))
	}
	for i, got := range append(first, second...) {
		if !bytes.Equal(got, want[i]) {
			t.Errorf("packet %d = %x, want %x", i, got, want[i])
		}
	}
}

func TestReadLoop_ReusesBuffersBetweenBatches(t *testing.T) {
	dev := tuntest.NewWithBatchSize(1500, 1)
	pkts := testPackets(t, 2)
	dev.Inject(pkts[0])
	dev.Inject(pkts[1])
	var kept [][]byte
	wait := runLoop(t.Context(), dev, func(p [][]byte) error {
		kept = append(kept, p[0]) // deliberately not copied
		if len(kept) == 2 {
			return dev.Close()
		}
		return nil
	})
	if err := wait(t); err != nil {
		t.Fatal(err)
	}
	if &kept[0][0] != &kept[1][0] {
		t.Fatal("second batch landed in a different buffer; the loop allocates per read")
	}
	if !bytes.Equal(kept[0], pkts[1][:len(kept[0])]) {
		t.Fatal("a slice kept from the first batch does not show the second batch's bytes")
	}
}

func TestReadLoop_ContextCancelEndsLoopAndClosesDevice(t *testing.T) {
	dev := tuntest.New(1500)
	ctx, cancel := context.WithCancel(t.Context())
	wait := runLoop(ctx, dev, func([][]byte) error { return nil })
	cancel()
	if err := wait(t); err != nil {
		t.Fatalf("ReadLoop = %v, want nil", err)
	}
	if _, err := dev.Write([][]byte{make([]byte, 40)}, tun.Headroom); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after cancel = %v, want os.ErrClosed (device closed)", err)
	}
}

func TestReadLoop_DeviceCloseEndsLoopWithNil(t *testing.T) {
	dev := tuntest.New(1500)
	wait := runLoop(t.Context(), dev, func([][]byte) error { return nil })
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait(t); err != nil {
		t.Fatalf("ReadLoop = %v, want nil", err)
	}
}

func TestReadLoop_DeliverErrorIsReturnedWrapped(t *testing.T) {
	dev := tuntest.New(1500)
	dev.Inject(testPackets(t, 1)[0])
	boom := errors.New("boom")
	wait := runLoop(t.Context(), dev, func([][]byte) error { return boom })
	if err := wait(t); !errors.Is(err, boom) {
		t.Fatalf("ReadLoop = %v, want wrapped %v", err, boom)
	}
}

func TestReadLoop_TooManySegmentsDeliversPacketsAndContinues(t *testing.T) {
	pkts := testPackets(t, 3)
	dev := &scriptedDevice{batch: 2, mtu: 1500, script: []readResult{
		{pkts: pkts[:2], err: wgtun.ErrTooManySegments},
		{pkts: pkts[2:]},
	}}
	var got int
	wait := runLoop(t.Context(), dev, func(p [][]byte) error { got += len(p); return nil })
	if err := wait(t); err != nil {
		t.Fatalf("ReadLoop = %v, want nil at scripted close", err)
	}
	if got != 3 {
		t.Fatalf("delivered %d packets, want 3", got)
	}
}

func TestReadLoop_ReadErrorIsReturnedWrapped(t *testing.T) {
	broken := errors.New("device gone")
	dev := &scriptedDevice{batch: 1, mtu: 1500, script: []readResult{{err: broken}}}
	wait := runLoop(t.Context(), dev, func([][]byte) error { return nil })
	if err := wait(t); !errors.Is(err, broken) {
		t.Fatalf("ReadLoop = %v, want wrapped %v", err, broken)
	}
}

func TestReadLoop_SkipsEmptyPackets(t *testing.T) {
	pkt := testPackets(t, 1)[0]
	dev := &scriptedDevice{batch: 3, mtu: 1500, script: []readResult{{pkts: [][]byte{{}, pkt, {}}}}}
	var got [][]byte
	wait := runLoop(t.Context(), dev, func(p [][]byte) error {
		for _, b := range p {
			got = append(got, bytes.Clone(b))
		}
		return nil
	})
	if err := wait(t); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !bytes.Equal(got[0], pkt) {
		t.Fatalf("delivered %d packets %x, want only %x", len(got), got, pkt)
	}
}

func TestReadLoop_SizesBuffersForMTUOrGSO(t *testing.T) {
	for _, tc := range []struct {
		batch, mtu, want int
	}{
		{batch: 1, mtu: 1500, want: tun.Headroom + 1500},
		{batch: 128, mtu: 1500, want: tun.Headroom + 65535},
		{batch: 8, mtu: 65535, want: tun.Headroom + 65535},
	} {
		dev := &scriptedDevice{batch: tc.batch, mtu: tc.mtu}
		wait := runLoop(t.Context(), dev, func([][]byte) error { return nil })
		if err := wait(t); err != nil {
			t.Fatal(err)
		}
		if dev.bufLens[0] != tc.want {
			t.Errorf("batch %d mtu %d: buffer of %d bytes, want %d", tc.batch, tc.mtu, dev.bufLens[0], tc.want)
		}
	}
}
