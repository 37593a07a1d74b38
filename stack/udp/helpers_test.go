package udp_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/udp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitLimit = 5 * time.Second

var (
	app4  = netip.MustParseAddrPort("198.18.0.2:40000")
	dst4  = netip.MustParseAddrPort("198.19.0.2:53")
	app6  = netip.MustParseAddrPort("[2001:2::2]:40000")
	dst6  = netip.MustParseAddrPort("[2001:2:0:1::2]:53")
	flow4 = stack.FlowID{Src: app4, Dst: dst4}
	flow6 = stack.FlowID{Src: app6, Dst: dst6}
)

// udpPacket builds the packet an app sends on flow, and parses it as the
// stack would.
func udpPacket(t testing.TB, flow stack.FlowID, payload []byte) packet.Packet {
	t.Helper()
	buf := make([]byte, 70000)
	n, err := packet.BuildUDP(buf, packet.UDPHeader{Src: flow.Src, Dst: flow.Dst}, payload)
	if err != nil {
		t.Fatalf("BuildUDP: %v", err)
	}
	p, err := packet.ParseIP(buf[:n])
	if err != nil {
		t.Fatalf("ParseIP: %v", err)
	}
	return p
}

// capture is a stack.PacketWriter that keeps a copy of every packet.
type capture struct {
	mu   sync.Mutex
	pkts [][]byte
	err  error // returned by WritePackets when set
}

func (c *capture) WritePackets(bufs [][]byte, offset int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	for _, b := range bufs {
		c.pkts = append(c.pkts, append([]byte(nil), b[offset:]...))
		clear(b[:offset]) // a writer may use the headroom
	}
	return len(bufs), nil
}

func (c *capture) packets() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.pkts...)
}

func (c *capture) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

// handler is a stack.Handler that passes each UDP flow to a test through
// conns and then runs serve, which by default waits until the Table
// closes. It closes the conn afterwards unless leave is set.
type handler struct {
	conns chan stack.PacketConn
	serve func(ctx context.Context, c stack.PacketConn)
	leave bool

	mu       sync.Mutex
	returned int // HandleUDP calls that returned
}

func newHandler() *handler {
	return &handler{conns: make(chan stack.PacketConn, 64)}
}

func (h *handler) HandleTCP(ctx context.Context, req stack.Request) { req.Reject(true) }

func (h *handler) HandleUDP(ctx context.Context, c stack.PacketConn) {
	defer func() {
		h.mu.Lock()
		h.returned++
		h.mu.Unlock()
	}()
	if !h.leave {
		defer c.Close()
	}
	h.conns <- c
	if h.serve != nil {
		h.serve(ctx, c)
		return
	}
	<-ctx.Done()
}

func (h *handler) returnedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.returned
}

// next returns the next flow handed to the handler.
func (h *handler) next(t *testing.T) stack.PacketConn {
	t.Helper()
	select {
	case c := <-h.conns:
		return c
	case <-time.After(waitLimit):
		t.Fatal("no flow handed to the handler")
		return nil
	}
}

// noFlow checks that no further flow was handed to the handler.
func (h *handler) noFlow(t *testing.T) {
	t.Helper()
	select {
	case c := <-h.conns:
		t.Fatalf("unexpected flow %v", c.ID())
	default:
	}
}

// newTable returns a Table with a capturing writer and a handler, closed
// when the test ends.
func newTable(t *testing.T, opts udp.Options) (*udp.Table, *capture, *handler) {
	t.Helper()
	w, h := &capture{}, newHandler()
	tab := udp.New(w, h, opts)
	t.Cleanup(func() { tab.Close() })
	return tab, w, h
}

// readString reads one datagram with a generous deadline.
func readString(t *testing.T, c stack.PacketConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return string(buf[:n])
}
