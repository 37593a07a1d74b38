package gvisor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tungate/tungate/stack"
)

const testTimeout = 10 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// acceptAll is a handler that accepts every flow and hands the Conn to the
// test through the returned channel.
func acceptAll(t *testing.T) (handlerFuncs, <-chan stack.Conn) {
	conns := make(chan stack.Conn, 16)
	return handlerFuncs{tcp: func(ctx context.Context, req stack.Request) {
		c, err := req.Accept(ctx)
		if err != nil {
			t.Errorf("Accept %s: %v", req.ID(), err)
			return
		}
		conns <- c
	}}, conns
}

// connect dials dst through h and returns both ends.
func connect(t *testing.T, h *harness, conns <-chan stack.Conn, dst netip.AddrPort) (stack.Conn, *clientConn) {
	t.Helper()
	ctx := testContext(t)
	cc, err := h.dial(ctx, dst)
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	select {
	case sc := <-conns:
		return sc, cc
	case <-ctx.Done():
		t.Fatal("no accepted conn")
	}
	return nil, nil
}

func TestAccept_HandshakeCompletesOnlyAfterAccept(t *testing.T) {
	pending := make(chan stack.Request)
	decide := make(chan struct{})
	accepted := make(chan stack.Conn, 1)
	var decided atomic.Bool
	h := newHarness(t, handlerFuncs{tcp: func(ctx context.Context, req stack.Request) {
		pending <- req
		<-decide
		decided.Store(true)
		c, err := req.Accept(ctx)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		accepted <- c
	}}, DefaultOptions())
	synAckBeforeAccept := make(chan struct{}, 1)
	h.watch(func(p []byte) {
		if seg, ok := parseTCP(p); ok && seg.flags.Contains(header.TCPFlagSyn) && !decided.Load() {
			synAckBeforeAccept <- struct{}{}
		}
	})
	ctx := testContext(t)
	dst := netip.AddrPortFrom(serverV4, 80)
	dial := h.dialAsync(ctx, dst)

	req := <-pending
	if got := req.ID(); got.Dst != dst || got.Src.Addr() != clientV4 {
		t.Errorf("ID = %v, want %s from %s", got, dst, clientV4)
	}
	select {
	case r := <-dial:
		t.Fatalf("dial finished before Accept: %v", r.err)
	default:
	}
	for _, p := range h.emitted() {
		if seg, ok := parseTCP(p); ok {
			t.Fatalf("stack emitted TCP before Accept: %+v", seg)
		}
	}
	close(decide)
	r := <-dial
	if r.err != nil {
		t.Fatalf("dial: %v", r.err)
	}
	defer r.c.Close()
	sc := <-accepted
	defer sc.Close()
	select {
	case <-synAckBeforeAccept:
		t.Error("SYN-ACK sent before Accept")
	default:
	}
	if sc.ID() != req.ID() {
		t.Errorf("Conn.ID = %v, Request.ID = %v", sc.ID(), req.ID())
	}
	if got := r.c.LocalAddr().String(); got != sc.ID().Src.String() {
		t.Errorf("client local addr %s, Conn.ID().Src %s", got, sc.ID().Src)
	}
	if st := h.srv.Stats(); st.TCPFlows != 1 || st.TCPAccepted != 1 || st.ActiveConns != 1 {
		t.Errorf("stats = %+v, want 1 flow, 1 accepted, 1 active", st)
	}
}

func TestAccept_SecondDecisionFails(t *testing.T) {
	second := make(chan error, 1)
	h := newHarness(t, handlerFuncs{tcp: func(ctx context.Context, req stack.Request) {
		c, err := req.Accept(ctx)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		req.Reject(true) // must be a no-op
		_, err = req.Accept(ctx)
		second <- err
		_ = c.Close()
	}}, DefaultOptions())
	c, err := h.dial(testContext(t), netip.AddrPortFrom(serverV4, 80))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if err := <-second; !errors.Is(err, errDecided) {
		t.Errorf("second Accept error = %v, want errDecided", err)
	}
	if st := h.srv.Stats(); st.TCPRejected != 0 {
		t.Errorf("Reject after Accept counted: %+v", st)
	}
}

func TestReject_WithResetRefusesDial(t *testing.T) {
	h := newHarness(t, handlerFuncs{tcp: func(_ context.Context, req stack.Request) {
		req.Reject(true)
	}}, DefaultOptions())
	_, err := h.dial(testContext(t), netip.AddrPortFrom(serverV4, 81))
	if !isClientErr[*tcpip.ErrConnectionRefused](err) {
		t.Fatalf("dial error = %v, want connection refused", err)
	}
	if st := h.srv.Stats(); st.TCPRejected != 1 {
		t.Errorf("TCPRejected = %d, want 1", st.TCPRejected)
	}
}

func TestReject_WithoutResetLeavesSYNUnanswered(t *testing.T) {
	rejected := make(chan struct{}, 16)
	h := newHarness(t, handlerFuncs{tcp: func(_ context.Context, req stack.Request) {
		req.Reject(false)
		rejected <- struct{}{}
	}}, DefaultOptions())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := h.dial(ctx, netip.AddrPortFrom(serverV4, 82))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial error = %v, want no answer (deadline exceeded)", err)
	}
	<-rejected
	for _, p := range h.emitted() {
		if seg, ok := parseTCP(p); ok {
			t.Errorf("stack answered a rejected SYN: %+v", seg)
		}
	}
}

func TestHandler_ReturningUndecidedResetsFlow(t *testing.T) {
	h := newHarness(t, handlerFuncs{tcp: func(context.Context, stack.Request) {}}, DefaultOptions())
	_, err := h.dial(testContext(t), netip.AddrPortFrom(serverV4, 83))
	if !isClientErr[*tcpip.ErrConnectionRefused](err) {
		t.Fatalf("dial error = %v, want connection refused", err)
	}
}

func TestConn_DataBothWaysArrivesIntact(t *testing.T) {
	for _, dst := range []netip.AddrPort{
		netip.AddrPortFrom(serverV4, 443),
		netip.AddrPortFrom(serverV6, 443),
	} {
		t.Run(dst.Addr().String(), func(t *testing.T) {
			handler, conns := acceptAll(t)
			opts := DefaultOptions()
			opts.MTU = MinMTU // many segments, all checked against the MTU
			h := newHarness(t, handler, opts)
			sc, cc := connect(t, h, conns, dst)
			defer sc.Close()
			defer cc.Close()
			if sc.ID().Dst != dst || sc.LocalAddr().String() != dst.String() {
				t.Errorf("ID %v / LocalAddr %v, want Dst %s", sc.ID(), sc.LocalAddr(), dst)
			}
			up, down := randomBytes(1<<20, 1), randomBytes(1<<20, 2)
			errc := make(chan error, 2)
			go func() { errc <- writeAllAndCloseWrite(cc, up) }()
			go func() { errc <- writeAllAndCloseWrite(sc, down) }()
			gotUp, err := io.ReadAll(sc)
			if err != nil {
				t.Fatalf("server read: %v", err)
			}
			gotDown, err := io.ReadAll(cc)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			for range 2 {
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			if sha256.Sum256(gotUp) != sha256.Sum256(up) {
				t.Errorf("upload corrupted: got %d bytes, want %d", len(gotUp), len(up))
			}
			if sha256.Sum256(gotDown) != sha256.Sum256(down) {
				t.Errorf("download corrupted: got %d bytes, want %d", len(gotDown), len(down))
			}
		})
	}
}

type halfCloser interface {
	io.Writer
	CloseWrite() error
}

func writeAllAndCloseWrite(w halfCloser, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return err
	}
	return w.CloseWrite()
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestConn_AppHalfCloseGivesEOFWhileWritesContinue(t *testing.T) {
	handler, conns := acceptAll(t)
	h := newHarness(t, handler, DefaultOptions())
	sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV4, 80))
	defer sc.Close()
	defer cc.Close()

	if _, err := cc.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := cc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(sc)
	if err != nil || string(got) != "request" {
		t.Fatalf("server ReadAll = %q, %v; want request, EOF", got, err)
	}
	if n, err := sc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after EOF = %d, %v; want io.EOF again", n, err)
	}
	if _, err := sc.Write([]byte("response")); err != nil {
		t.Fatalf("server write after app FIN: %v", err)
	}
	if err := sc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(cc)
	if err != nil || string(got) != "response" {
		t.Fatalf("client ReadAll = %q, %v; want response", got, err)
	}
}

func TestConn_CloseWriteSendsFINAndReadsContinue(t *testing.T) {
	handler, conns := acceptAll(t)
	h := newHarness(t, handler, DefaultOptions())
	sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV6, 80))
	defer sc.Close()
	defer cc.Close()

	if _, err := sc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := sc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(cc)
	if err != nil || string(got) != "hello" {
		t.Fatalf("client ReadAll = %q, %v; want hello then EOF", got, err)
	}
	if _, err := sc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after CloseWrite = %v, want net.ErrClosed", err)
	}
	if _, err := cc.Write([]byte("still open")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32)
	n, err := io.ReadAtLeast(sc, buf, len("still open"))
	if err != nil || string(buf[:n]) != "still open" {
		t.Errorf("server Read after CloseWrite = %q, %v", buf[:n], err)
	}
}

func TestConn_AbortSendsRSTAndClientSeesReset(t *testing.T) {
	handler, conns := acceptAll(t)
	h := newHarness(t, handler, DefaultOptions())
	sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV4, 80))
	defer cc.Close()
	sawRST := make(chan struct{}, 1)
	h.watch(func(p []byte) {
		if seg, ok := parseTCP(p); ok && seg.dst == sc.ID().Src && seg.flags.Contains(header.TCPFlagRst) {
			select {
			case sawRST <- struct{}{}:
			default:
			}
		}
	})
	// Unsent data must not turn the RST into a FIN.
	if _, err := sc.Write([]byte("discarded?")); err != nil {
		t.Fatal(err)
	}
	if err := sc.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if terr := cc.readErr(testContext(t)); !isClientErr[*tcpip.ErrConnectionReset](clientErr{terr}) {
		t.Errorf("client read error = %v, want connection reset", terr)
	}
	select {
	case <-sawRST:
	default:
		t.Error("no RST emitted by Abort")
	}
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Abort = %v, want net.ErrClosed", err)
	}
	if err := sc.Abort(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Abort = %v, want net.ErrClosed", err)
	}
}

func TestConn_AppResetGivesECONNRESET(t *testing.T) {
	handler, conns := acceptAll(t)
	h := newHarness(t, handler, DefaultOptions())
	sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV4, 80))
	defer sc.Close()

	readErr := make(chan error, 1)
	go func() {
		_, err := sc.Read(make([]byte, 16))
		readErr <- err
	}()
	cc.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	cc.ep.Close()
	if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after app RST = %v, want ECONNRESET", err)
	}
	if _, err := sc.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("second Read = %v, want ECONNRESET again", err)
	}
	if _, err := sc.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Write after RST = %v, want ECONNRESET", err)
	}
}

func TestConn_CloseUnblocksReadAndWrite(t *testing.T) {
	handler, conns := acceptAll(t)
	opts := DefaultOptions()
	opts.SendBufferSize = minBufferSize
	h := newHarness(t, handler, opts)
	sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV4, 80))
	defer cc.Close()

	readErr, writeErr := make(chan error, 1), make(chan error, 1)
	go func() {
		_, err := sc.Read(make([]byte, 16))
		readErr <- err
	}()
	go func() {
		// The client never reads: the write blocks once windows fill.
		_, err := sc.Write(make([]byte, 16<<20))
		writeErr <- err
	}()
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("pending Read = %v, want net.ErrClosed", err)
	}
	if err := <-writeErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("pending Write = %v, want net.ErrClosed", err)
	}
	if err := sc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if st := h.srv.Stats(); st.ActiveConns != 0 {
		t.Errorf("ActiveConns = %d after Close", st.ActiveConns)
	}
}

func TestConn_CloseReadFailsReads(t *testing.T) {
	handler, conns := acceptAll(t)
	h := newHarness(t, handler, DefaultOptions())
	sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV4, 80))
	defer sc.Close()
	defer cc.Close()
	if err := sc.CloseRead(); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after CloseRead = %v, want net.ErrClosed", err)
	}
	if _, err := sc.Write([]byte("ok")); err != nil {
		t.Errorf("Write after CloseRead: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(cc, buf); err != nil || !bytes.Equal(buf, []byte("ok")) {
		t.Errorf("client read %q, %v", buf, err)
	}
}

func TestConn_ReadDeadlineTimesOut(t *testing.T) {
	handler, conns := acceptAll(t)
	h := newHarness(t, handler, DefaultOptions())
	sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV4, 80))
	defer sc.Close()
	defer cc.Close()
	if err := sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := sc.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Read = %v, want a timeout error", err)
	}
}
