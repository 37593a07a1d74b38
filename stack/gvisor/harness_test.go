package gvisor

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest/gvpeer"
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
// the app (see gvpeer), recording every packet the Stack emits.
type harness struct {
	t      *testing.T
	srv    *Stack
	peer   *gvpeer.Peer
	client *gvstack.Stack // peer.Stack

	mu       sync.Mutex     // guards observed and watchers
	observed [][]byte       // copies of every packet the Stack emitted
	watchers []func([]byte) // called with each emitted packet
}

func newHarness(t *testing.T, h stack.Handler, opts Options) *harness {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	if opts.MTU == 0 {
		opts.MTU = DefaultMTU
	}
	hs := &harness{t: t}
	peer, err := gvpeer.New(gvpeer.Options{MTU: opts.MTU, Addrs: []netip.Addr{clientV4, clientV6}, Observe: hs.record})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(peer, h, opts)
	if err != nil {
		peer.Close()
		t.Fatalf("New: %v", err)
	}
	hs.srv, hs.peer, hs.client = srv, peer, peer.Stack
	peer.Start(srv)
	t.Cleanup(hs.close)
	return hs
}

// record keeps a copy of p and shows it to the watchers.
func (h *harness) record(p []byte) {
	h.mu.Lock()
	h.observed = append(h.observed, p)
	watchers := h.watchers
	h.mu.Unlock()
	for _, fn := range watchers {
		fn(p)
	}
}

func netProto(a netip.Addr) tcpip.NetworkProtocolNumber { return gvpeer.NetProto(a) }

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
	h.peer.Close()
	for _, v := range h.peer.Violations() {
		h.t.Errorf("PacketWriter contract: %s", v)
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
	terr = ep.Connect(gvpeer.FullAddress(dst))
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
