package tcp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/nettest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	gvtcp "gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/tungate/tungate/stack"
)

// peerHarness connects an Engine to a gVisor stack playing the app, in
// memory, with real time: the app side is an independent TCP
// implementation, so the engine is tested against someone else's TCP.
type peerHarness struct {
	t      testing.TB
	e      *Engine
	client *gvstack.Stack
	cep    *channel.Endpoint
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	toApp  chan []byte
	conns  chan stack.Conn
	// accept decides each request; nil accepts.
	accept func(stack.Request) bool
}

type peerWriter struct{ h *peerHarness }

func (w peerWriter) WritePackets(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		select {
		case w.h.toApp <- p:
		case <-w.h.ctx.Done():
			return i, net.ErrClosed
		}
	}
	return len(bufs), nil
}

type peerHandler struct{ h *peerHarness }

func (p peerHandler) HandleTCP(ctx context.Context, r stack.Request) {
	if p.h.accept != nil && !p.h.accept(r) {
		r.Reject(true)
		return
	}
	c, err := r.Accept(ctx)
	if err != nil {
		return
	}
	select {
	case p.h.conns <- c:
	case <-ctx.Done():
		c.Close()
	}
}
func (peerHandler) HandleUDP(ctx context.Context, c stack.PacketConn) { c.Close() }

func newPeerHarness(t testing.TB, opts Options) *peerHarness {
	t.Helper()
	h := &peerHarness{t: t, toApp: make(chan []byte, 8192), conns: make(chan stack.Conn, 64)}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	e, err := New(peerWriter{h}, peerHandler{h}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	h.cep = channel.New(8192, uint32(opts.MTU), "")
	h.client = gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{gvtcp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	h.client.SetTransportProtocolOption(gvtcp.ProtocolNumber, &sack)
	if err := h.client.CreateNIC(1, h.cep); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{appAddr.Addr(), netip.MustParseAddr("2001:2::1")} {
		proto := header.IPv4ProtocolNumber
		if a.Is6() {
			proto = header.IPv6ProtocolNumber
		}
		h.client.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: proto,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}, gvstack.AddressProperties{})
	}
	h.client.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	h.wg.Add(2)
	go h.appToEngine()
	go h.engineToApp()
	t.Cleanup(h.close)
	return h
}

func (h *peerHarness) appToEngine() {
	defer h.wg.Done()
	for {
		pkt := h.cep.ReadContext(h.ctx)
		if pkt == nil {
			return
		}
		b := append([]byte(nil), pkt.ToView().AsSlice()...)
		pkt.DecRef()
		if h.e.DeliverInbound([][]byte{b}) != nil {
			return
		}
	}
}

func (h *peerHarness) engineToApp() {
	defer h.wg.Done()
	for {
		select {
		case <-h.ctx.Done():
			return
		case b := <-h.toApp:
			proto := header.IPv4ProtocolNumber
			if b[0]>>4 == 6 {
				proto = header.IPv6ProtocolNumber
			}
			pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
			h.cep.InjectInbound(proto, pkt)
			pkt.DecRef()
		}
	}
}

func (h *peerHarness) close() {
	h.e.Close()
	h.cancel()
	h.wg.Wait()
	h.client.Close()
	h.client.Wait()
}

// dial connects the app to dst through the engine and returns both ends.
func (h *peerHarness) dial(dst netip.AddrPort) (net.Conn, stack.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	proto := header.IPv4ProtocolNumber
	if dst.Addr().Is6() {
		proto = header.IPv6ProtocolNumber
	}
	app, err := gonet.DialContextTCP(ctx, h.client, tcpip.FullAddress{NIC: 1,
		Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}, proto)
	if err != nil {
		return nil, nil, err
	}
	select {
	case c := <-h.conns:
		return app, c, nil
	case <-ctx.Done():
		app.Close()
		return nil, nil, ctx.Err()
	}
}

func TestEngineConn_Nettest(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs after the harness closed
	h := newPeerHarness(t, DefaultOptions())
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		app, c, err := h.dial(dstAddr)
		if err != nil {
			return nil, nil, nil, err
		}
		return c, app, func() { c.Close(); app.Close() }, nil
	})
}

// transfer moves n bytes each way at once and checks them.
func transfer(t *testing.T, h *peerHarness, dst netip.AddrPort, n int) {
	t.Helper()
	app, c, err := h.dial(dst)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer app.Close()
	defer c.Close()
	up := make([]byte, n)
	down := make([]byte, n)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range up {
		up[i], down[i] = byte(rng.Uint32()), byte(rng.Uint32())
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	send := func(w net.Conn, b []byte) {
		defer wg.Done()
		if _, err := w.Write(b); err != nil {
			errs <- err
			return
		}
		if cw, ok := w.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	recv := func(r net.Conn, want []byte) {
		defer wg.Done()
		r.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(r)
		if err != nil {
			errs <- err
			return
		}
		if !bytes.Equal(got, want) {
			errs <- errors.New("data mismatch: sha " + string(sha256.New().Sum(got)[:4]))
		}
	}
	wg.Add(4)
	go send(app, up)
	go send(c, down)
	go recv(c, up)
	go recv(app, down)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestEngine_BulkBothWaysAgainstGVisorPeer(t *testing.T) {
	h := newPeerHarness(t, DefaultOptions())
	transfer(t, h, dstAddr, 8<<20)
	transfer(t, h, netip.MustParseAddrPort("[2001:2::7]:443"), 2<<20)
}
