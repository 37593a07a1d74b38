package gvpeer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tungate/tungate/stack"
)

var app = netip.MustParseAddr("198.18.0.1")

// sink is an Inbound that hands each packet to a channel.
type sink chan []byte

func (s sink) DeliverInbound(pkts [][]byte) error {
	for _, p := range pkts {
		s <- p
	}
	return nil
}

func newPeer(t *testing.T, opts Options) (*Peer, sink) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	in := make(sink, 64)
	p.Start(in)
	return p, in
}

func TestDialSendsASYNFromTheAppAddress(t *testing.T) {
	p, in := newPeer(t, Options{MTU: 1500, Addrs: []netip.Addr{app}})
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.DialTCP(ctx, netip.MustParseAddrPort("198.19.0.2:80"))
		done <- err
	}()
	select {
	case b := <-in:
		if b[0]>>4 != 4 || b[9] != 6 {
			t.Fatalf("not IPv4/TCP: % x", b[:20])
		}
		if src := netip.AddrFrom4([4]byte(b[12:16])); src != app {
			t.Errorf("source %v, want %v", src, app)
		}
		if flags := b[20+13]; flags != 0x02 {
			t.Errorf("flags %#x, want SYN", flags)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no SYN reached the stack under test")
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("dial without an answer succeeded")
	}
}

func TestWritePacketsChecksTheContract(t *testing.T) {
	var seen int
	p, _ := newPeer(t, Options{MTU: 100, Addrs: []netip.Addr{app}, Observe: func([]byte) { seen++ }})
	buf := func(n int) []byte {
		b := make([]byte, stack.Headroom+n)
		if n > 0 {
			b[stack.Headroom] = 0x45
		}
		return b
	}
	if n, err := p.WritePackets([][]byte{buf(40), buf(101), buf(0)}, stack.Headroom); n != 3 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	if _, err := p.WritePackets([][]byte{buf(40)}, 0); err != nil {
		t.Fatal(err)
	}
	p.Close()
	got := strings.Join(p.Violations(), "; ")
	for _, want := range []string{"exceeds mtu 100", "empty packet", "offset 0 < headroom"} {
		if !strings.Contains(got, want) {
			t.Errorf("violations %q lack %q", got, want)
		}
	}
	if seen != 3 {
		t.Errorf("Observe saw %d packets, want 3 (the empty one is not a packet)", seen)
	}
	if _, err := p.WritePackets([][]byte{buf(40)}, stack.Headroom); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WritePackets after Close: %v, want net.ErrClosed", err)
	}
}

func TestNewRejectsANonPositiveMTU(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("MTU 0 accepted")
	}
}
