package gateway

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/tun/tuntest"
)

// serve runs Serve on an in-memory device until the test ends.
func serve(t *testing.T, cfg *config.Config) *tuntest.Device {
	t.Helper()
	return serveWith(t, cfg, loopbackDialer{})
}

// serveWith is serve with d as the upstream block's dialer.
func serveWith(t *testing.T, cfg *config.Config, d proxy.Dialer) *tuntest.Device {
	t.Helper()
	return serveOpts(t, cfg, Options{Dialer: d})
}

// loopbackDialer sends every upstream connection to the same port on
// 127.0.0.1, so the tests' flows can name test addresses (198.19.0.0/24)
// that a stack accepts from a TUN while the servers listen on loopback.
type loopbackDialer struct{}

func (loopbackDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ap := netip.MustParseAddrPort(addr)
	var d net.Dialer
	return d.DialContext(ctx, network, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String())
}

// upstream is where a flow to 127.0.0.1:port is addressed by the app.
func upstream(loopback string) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("198.19.0.2"), netip.MustParseAddrPort(loopback).Port())
}

func syn(t *testing.T, src, dst netip.AddrPort) []byte {
	t.Helper()
	b := make([]byte, 100)
	n, err := packet.BuildTCP(b, packet.TCPHeader{
		Src: src, Dst: dst, Seq: 1000, Flags: packet.SYN, Window: 65535,
		Options: &packet.TCPOptions{MSS: 1460, HasMSS: true},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// nextTCP returns the next TCP packet the gateway writes to the app.
func nextTCP(t *testing.T, dev *tuntest.Device) packet.TCP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		b, err := dev.Next(ctx)
		if err != nil {
			t.Fatalf("no packet from the gateway: %v", err)
		}
		p, err := packet.ParseIP(b)
		if err != nil {
			t.Fatalf("gateway wrote a bad packet: %v", err)
		}
		if p.Proto == packet.ProtoTCP {
			return p.TCP()
		}
	}
}

// kinds are the stacks every Serve test runs on.
var kinds = []string{config.StackCustom, config.StackGVisor}

func withStack(kind string) *config.Config {
	cfg := config.Default()
	cfg.Stack.Kind = kind
	return cfg
}

func TestServe_SYNToRefusingUpstreamGetsRST(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) { testRefusingUpstream(t, kind) })
	}
}

func testRefusingUpstream(t *testing.T, kind string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there any more: the dial is refused

	dev := serve(t, withStack(kind))
	app := netip.MustParseAddrPort("198.18.0.1:40000")
	dev.Inject(syn(t, app, upstream(closed.String())))
	seg := nextTCP(t, dev)
	if !seg.Flags().Has(packet.RST) || seg.Ack() != 1001 {
		t.Fatalf("got %v ack %d; want RST acking the SYN", seg.Flags(), seg.Ack())
	}
}

func TestServe_SYNToListeningUpstreamGetsSYNACK(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) { testListeningUpstream(t, kind) })
	}
}

func testListeningUpstream(t *testing.T, kind string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()

	dev := serve(t, withStack(kind))
	app := netip.MustParseAddrPort("198.18.0.1:40001")
	dev.Inject(syn(t, app, upstream(ln.Addr().String())))
	seg := nextTCP(t, dev)
	if seg.Flags() != packet.SYN|packet.ACK || seg.Ack() != 1001 {
		t.Fatalf("got %v ack %d; want SYN-ACK acking the SYN", seg.Flags(), seg.Ack())
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("upstream never saw the connection")
	}
}

func TestServe_UnknownStackKindFails(t *testing.T) {
	cfg := config.Default()
	cfg.Stack.Kind = "nonsense"
	err := Serve(context.Background(), cfg, tuntest.New(1500), Options{})
	if err == nil {
		t.Fatal("Serve accepted an unknown stack kind")
	}
}
