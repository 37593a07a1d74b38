package gvisor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tungate/tungate/stack"
)

// Addresses of the in-memory test network (benchmark range only).
var (
	clientV4 = netip.MustParseAddr("198.18.0.1")
	clientV6 = netip.MustParseAddr("2001:2::1")
	serverV4 = netip.MustParseAddr("198.19.0.2")
	serverV6 = netip.MustParseAddr("2001:2::7")
)

// handlerFuncs is a stack.Handler made of functions; nil ones reject.
type handlerFuncs struct {
	tcp func(ctx context.Context, req stack.Request)
	udp func(ctx context.Context, c stack.PacketConn)
}

func (h handlerFuncs) HandleTCP(ctx context.Context, req stack.Request) {
	if h.tcp == nil {
		req.Reject(true)
		return
	}
	h.tcp(ctx, req)
}

func (h handlerFuncs) HandleUDP(ctx context.Context, c stack.PacketConn) {
	if h.udp == nil {
		_ = c.Close()
		return
	}
	h.udp(ctx, c)
}

// harness connects the Stack under test to a second gVisor stack playing
// the app: the client's packets go to Stack.DeliverInbound, the Stack's
// PacketWriter output is injected into the client. Each direction runs on
// its own goroutine so neither stack re-enters the other.
type harness struct {
	t      *testing.T
	srv    *Stack
	client *gvstack.Stack
	cep    *channel.Endpoint
	mtu    int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	toClient chan []byte

	mu       sync.Mutex     // guards observed and bad
	observed [][]byte       // copies of every packet the Stack emitted
	bad      []string       // PacketWriter contract violations
	watchers []func([]byte) // called with each emitted packet
}

func newHarness(t *testing.T, h stack.Handler, opts Options) *harness {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	hs := &harness{t: t, mtu: opts.MTU, toClient: make(chan []byte, 4096)}
	hs.ctx, hs.cancel = context.WithCancel(context.Background())
	srv, err := New(serverWriter{hs}, h, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs.srv = srv
	hs.startClient()
	t.Cleanup(hs.close)
	return hs
}

func (h *harness) startClient() {
	h.cep = channel.New(4096, uint32(h.mtu), "")
	h.client = gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	sack := tcpip.TCPSACKEnabled(true)
	must(h.t, h.client.SetTransportProtocolOption(tcp.ProtocolNumber, &sack))
	must(h.t, h.client.CreateNIC(1, h.cep))
	for _, a := range []netip.Addr{clientV4, clientV6} {
		pa := tcpip.ProtocolAddress{Protocol: netProto(a), AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		must(h.t, h.client.AddProtocolAddress(1, pa, gvstack.AddressProperties{}))
	}
	h.client.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	h.wg.Add(2)
	go h.clientToServer()
	go h.serverToClient()
}

func must(t *testing.T, terr tcpip.Error) {
	t.Helper()
	if terr != nil {
		t.Fatalf("client stack: %s", terr)
	}
}

func netProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return header.IPv4ProtocolNumber
	}
	return header.IPv6ProtocolNumber
}

func (h *harness) clientToServer() {
	defer h.wg.Done()
	for {
		pkt := h.cep.ReadContext(h.ctx)
		if pkt == nil {
			return
		}
		b := append([]byte(nil), pkt.ToView().AsSlice()...)
		pkt.DecRef()
		if err := h.srv.DeliverInbound([][]byte{b}); err != nil {
			return
		}
	}
}

func (h *harness) serverToClient() {
	defer h.wg.Done()
	for {
		select {
		case <-h.ctx.Done():
			return
		case b := <-h.toClient:
			proto, ok := networkProtocol(b)
			if !ok {
				continue
			}
			pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
			h.cep.InjectInbound(proto, pkt)
			pkt.DecRef()
		}
	}
}

// serverWriter is the Stack's PacketWriter: it checks the contract,
// records and forwards each packet.
type serverWriter struct{ h *harness }

func (w serverWriter) WritePackets(bufs [][]byte, offset int) (int, error) {
	h := w.h
	for i, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		h.mu.Lock()
		if offset < stack.Headroom {
			h.bad = append(h.bad, fmt.Sprintf("offset %d < headroom", offset))
		}
		if len(p) > h.mtu {
			h.bad = append(h.bad, fmt.Sprintf("packet of %d bytes exceeds mtu %d", len(p), h.mtu))
		}
		h.observed = append(h.observed, p)
		watchers := h.watchers
		h.mu.Unlock()
		for _, fn := range watchers {
			fn(p)
		}
		select {
		case h.toClient <- p:
		case <-h.ctx.Done():
			return i, errors.New("harness closed")
		}
	}
	return len(bufs), nil
}

// watch registers fn for every packet the Stack emits from now on.
func (h *harness) watch(fn func([]byte)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.watchers = append(h.watchers, fn)
}

// emitted returns copies of the packets the Stack emitted so far.
func (h *harness) emitted() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.observed...)
}

func (h *harness) close() {
	if err := h.srv.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
	h.cancel()
	h.wg.Wait()
	h.client.Close()
	h.client.Wait()
	h.cep.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bad {
		h.t.Errorf("PacketWriter contract: %s", b)
	}
}

// clientConn is the app's end of a TCP connection.
type clientConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
	wq *waiter.Queue
}

// clientErr carries the client stack's tcpip.Error.
type clientErr struct{ terr tcpip.Error }

func (e clientErr) Error() string { return "client: " + e.terr.String() }

// isClientErr reports whether err is the client stack error T.
func isClientErr[T tcpip.Error](err error) bool {
	var ce clientErr
	if !errors.As(err, &ce) {
		return false
	}
	_, ok := ce.terr.(T)
	return ok
}

// dial connects the client to dst, giving up when ctx is done.
func (h *harness) dial(ctx context.Context, dst netip.AddrPort) (*clientConn, error) {
	wq := new(waiter.Queue)
	ep, terr := h.client.NewEndpoint(tcp.ProtocolNumber, netProto(dst.Addr()), wq)
	if terr != nil {
		return nil, clientErr{terr}
	}
	entry, ch := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ch:
			terr = ep.LastError()
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		}
	}
	if terr != nil {
		ep.Close()
		return nil, clientErr{terr}
	}
	return &clientConn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq}, nil
}

// readErr blocks until a read on the client endpoint fails and returns
// the stack's error; data still buffered is discarded.
func (c *clientConn) readErr(ctx context.Context) tcpip.Error {
	entry, ch := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	buf := make([]byte, 64<<10)
	for {
		w := tcpip.SliceWriter(buf)
		_, terr := c.ep.Read(&w, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
			continue
		case *tcpip.ErrWouldBlock:
		default:
			return terr
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return &tcpip.ErrTimeout{}
		}
	}
}

// dialResult is the outcome of an asynchronous dial.
type dialResult struct {
	c   *clientConn
	err error
}

// dialAsync dials on a goroutine the test waits for through the channel.
func (h *harness) dialAsync(ctx context.Context, dst netip.AddrPort) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		c, err := h.dial(ctx, dst)
		ch <- dialResult{c, err}
	}()
	return ch
}

// tcpSegment is an emitted packet's TCP view, if it carries TCP.
type tcpSegment struct {
	src, dst netip.AddrPort
	flags    header.TCPFlags
}

func parseTCP(p []byte) (tcpSegment, bool) {
	var (
		src, dst netip.Addr
		payload  []byte
		proto    uint8
	)
	switch p[0] >> 4 {
	case 4:
		ip := header.IPv4(p)
		src, dst = toAddr(ip.SourceAddress()), toAddr(ip.DestinationAddress())
		payload, proto = ip.Payload(), ip.Protocol()
	case 6:
		ip := header.IPv6(p)
		src, dst = toAddr(ip.SourceAddress()), toAddr(ip.DestinationAddress())
		payload, proto = ip.Payload(), ip.NextHeader() // the test peers send no extension headers
	}
	if proto != uint8(header.TCPProtocolNumber) || len(payload) < header.TCPMinimumSize {
		return tcpSegment{}, false
	}
	t := header.TCP(payload)
	return tcpSegment{
		src:   netip.AddrPortFrom(src, t.SourcePort()),
		dst:   netip.AddrPortFrom(dst, t.DestinationPort()),
		flags: t.Flags(),
	}, true
}
