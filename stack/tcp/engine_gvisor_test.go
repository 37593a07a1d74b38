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

	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest/gvpeer"
)

// peerHarness connects an Engine to a gVisor stack playing the app (see
// gvpeer): the app side is an independent TCP implementation, so the
// engine is tested against someone else's TCP.
type peerHarness struct {
	t     testing.TB
	e     *Engine
	peer  *gvpeer.Peer
	conns chan stack.Conn
	// accept decides each request; nil accepts.
	accept func(stack.Request) bool
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
	h := &peerHarness{t: t, conns: make(chan stack.Conn, 64)}
	peer, err := gvpeer.New(gvpeer.Options{MTU: opts.MTU, Queue: 8192,
		Addrs: []netip.Addr{appAddr.Addr(), netip.MustParseAddr("2001:2::1")}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(peer, peerHandler{h}, opts)
	if err != nil {
		peer.Close()
		t.Fatal(err)
	}
	h.e, h.peer = e, peer
	peer.Start(e)
	t.Cleanup(h.close)
	return h
}

func (h *peerHarness) close() {
	h.e.Close()
	h.peer.Close()
	for _, v := range h.peer.Violations() {
		h.t.Errorf("PacketWriter contract: %s", v)
	}
}

// dial connects the app to dst through the engine and returns both ends.
func (h *peerHarness) dial(dst netip.AddrPort) (net.Conn, stack.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app, err := h.peer.DialTCP(ctx, dst)
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
