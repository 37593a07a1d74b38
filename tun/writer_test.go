package tun_test

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/tungate/tungate/tun"
	"github.com/tungate/tungate/tun/tuntest"
)

// withHeadroom returns pkt preceded by tun.Headroom free bytes.
func withHeadroom(pkt []byte) []byte {
	return append(make([]byte, tun.Headroom), pkt...)
}

func TestWriter_RejectsOffsetBelowHeadroom(t *testing.T) {
	dev := tuntest.New(1500)
	w := tun.NewWriter(dev)
	pkt := testPackets(t, 1)[0]
	buf := append(make([]byte, tun.Headroom-1), pkt...)
	n, err := w.WritePackets([][]byte{buf}, tun.Headroom-1)
	if n != 0 || !errors.Is(err, tun.ErrShortHeadroom) {
		t.Fatalf("WritePackets = %d, %v; want 0, ErrShortHeadroom", n, err)
	}
	select {
	case p := <-dev.Outbound():
		t.Fatalf("rejected write reached the device: %x", p)
	default:
	}
}

func TestWriter_WritesPacketsWithoutHeadroom(t *testing.T) {
	dev := tuntest.New(1500)
	w := tun.NewWriter(dev)
	pkts := testPackets(t, 3)
	bufs := [][]byte{withHeadroom(pkts[0]), withHeadroom(pkts[1]), withHeadroom(pkts[2])}
	if n, err := w.WritePackets(bufs, tun.Headroom); n != 3 || err != nil {
		t.Fatalf("WritePackets = %d, %v; want 3, nil", n, err)
	}
	for i, want := range pkts {
		got, err := dev.Next(t.Context())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("packet %d = %x, %v; want %x", i, got, err, want)
		}
	}
}

func TestWriter_IsSafeForConcurrentWriters(t *testing.T) {
	const writers, perWriter = 8, 50
	dev := tuntest.New(1500)
	w := tun.NewWriter(dev)
	pkt := testPackets(t, 1)[0]
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			buf := withHeadroom(pkt)
			for range perWriter {
				if _, err := w.WritePackets([][]byte{buf}, tun.Headroom); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := len(dev.Outbound()); got != writers*perWriter {
		t.Fatalf("device got %d packets, want %d", got, writers*perWriter)
	}
}

func TestWithStats_CountsPacketsAndBytesBothWays(t *testing.T) {
	inner := tuntest.NewWithBatchSize(1500, 8)
	var s tun.Stats
	dev := tun.WithStats(inner, &s)
	pkts := testPackets(t, 3)
	var total uint64
	for _, p := range pkts {
		inner.Inject(p)
		total += uint64(len(p))
	}
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, tun.Headroom+1500)
	}
	if n, err := dev.Read(bufs, make([]int, 8), tun.Headroom); n != 3 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if _, err := dev.Write([][]byte{withHeadroom(pkts[0]), withHeadroom(pkts[1])}, tun.Headroom); err != nil {
		t.Fatal(err)
	}
	_ = dev.Close()
	_, _ = dev.Read(bufs, make([]int, 8), tun.Headroom) // closed: not an error to count
	got := [...]uint64{s.ReadPackets.Load(), s.ReadBytes.Load(), s.WritePackets.Load(), s.WriteBytes.Load(), s.ReadErrors.Load()}
	want := [...]uint64{3, total, 2, uint64(len(pkts[0]) + len(pkts[1])), 0}
	if got != want {
		t.Fatalf("stats (rx pkts, rx bytes, tx pkts, tx bytes, rx errors) = %v, want %v", got, want)
	}
}
