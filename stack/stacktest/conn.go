package stacktest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest/gvpeer"
)

// The Conn rules of package stack's Conn doc, checked end to end: the app
// is a gVisor TCP stack (gvpeer) in front of the stack under test, so each
// rule is seen from a real peer's side as well as the Conn's.

// runConn runs the Conn rules as subtests of t.
func runConn(t *testing.T, newStack NewStack) {
	t.Run("AddressesAreTheAppsFlow", func(t *testing.T) { connAddresses(t, newStack) })
	t.Run("AppFINIsEOFAfterTheData", func(t *testing.T) { connAppFIN(t, newStack) })
	t.Run("CloseWriteIsAHalfClose", func(t *testing.T) { connCloseWrite(t, newStack) })
	t.Run("AppResetIsECONNRESET", func(t *testing.T) { connAppReset(t, newStack) })
	t.Run("AbortResetsTheApp", func(t *testing.T) { connAbort(t, newStack) })
	t.Run("CloseUnblocksReadAndFailsLaterCalls", func(t *testing.T) { connClose(t, newStack) })
	t.Run("CloseReadFailsReads", func(t *testing.T) { connCloseRead(t, newStack) })
	t.Run("ReadDeadlineTimesOut", func(t *testing.T) { connReadDeadline(t, newStack) })
	t.Run("StateFollowsTheClose", func(t *testing.T) { connState(t, newStack) })
}

// connRig is a stack under test with the app in front of it; every flow
// is accepted and its Conn handed to the test.
type connRig struct {
	peer  *gvpeer.Peer
	conns chan stack.Conn
}

func newConnRig(t *testing.T, newStack NewStack) *connRig {
	t.Helper()
	peer, err := gvpeer.New(gvpeer.Options{MTU: 1500, Addrs: []netip.Addr{app.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	r := &connRig{peer: peer, conns: make(chan stack.Conn, 4)}
	s, err := newStack(peer, handlerFunc(func(ctx context.Context, req stack.Request) {
		c, err := req.Accept(ctx)
		if err != nil {
			return
		}
		r.conns <- c
	}))
	if err != nil {
		peer.Close()
		t.Fatalf("new stack: %v", err)
	}
	peer.Start(s)
	t.Cleanup(func() {
		s.Close()
		peer.Close()
		for _, v := range peer.Violations() {
			t.Errorf("PacketWriter contract: %s", v)
		}
	})
	return r
}

// dial connects the app to server and returns both ends.
func (r *connRig) dial(t *testing.T) (*gvpeer.AppConn, stack.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	a, err := r.peer.Dial(ctx, server)
	if err != nil {
		t.Fatalf("app dial: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	select {
	case c := <-r.conns:
		t.Cleanup(func() { c.Close() })
		return a, c
	case <-ctx.Done():
		t.Fatal("the handler got no Conn")
		return nil, nil
	}
}

// readAll reads c to its end within waitLimit.
func readAll(t *testing.T, who string, c net.Conn) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: no end of stream within %v", who, waitLimit)
	}
	return b, err
}

// write writes p to c or fails the test.
func write(t *testing.T, who string, c net.Conn, p string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := c.Write([]byte(p)); err != nil {
		t.Fatalf("%s write: %v", who, err)
	}
}

func connAddresses(t *testing.T, newStack NewStack) {
	a, c := newConnRig(t, newStack).dial(t)
	appAddr := a.LocalAddr().(*net.TCPAddr).AddrPort()
	if got := c.ID(); got.Dst != server || got.Src != appAddr {
		t.Errorf("ID = %v, want %v -> %v", got, appAddr, server)
	}
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort(); got != server {
		t.Errorf("LocalAddr = %v, want the app's destination %v", got, server)
	}
	if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != appAddr {
		t.Errorf("RemoteAddr = %v, want the app's address %v", got, appAddr)
	}
}

func connAppFIN(t *testing.T, newStack NewStack) {
	a, c := newConnRig(t, newStack).dial(t)
	write(t, "app", a, "request")
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, "Conn", c)
	if err != nil || string(got) != "request" {
		t.Fatalf("Conn read %q, %v; want the data, then io.EOF", got, err)
	}
	// The other direction stays open after the app's FIN.
	write(t, "Conn", c, "response")
	c.Close()
	if got, err := readAll(t, "app", a); err != nil || string(got) != "response" {
		t.Fatalf("app read %q, %v; want the response, then EOF", got, err)
	}
}

func connState(t *testing.T, newStack NewStack) {
	a, c := newConnRig(t, newStack).dial(t)
	sc, ok := c.(stack.StateConn)
	if !ok {
		t.Fatalf("%T does not report its state (stack.StateConn)", c)
	}
	if got := sc.State(); got != "ESTABLISHED" {
		t.Errorf("State after the handshake = %q, want ESTABLISHED", got)
	}
	a.CloseWrite()
	if _, err := readAll(t, "Conn", c); err != nil {
		t.Fatal(err)
	}
	if got := sc.State(); got != "CLOSE-WAIT" {
		t.Errorf("State after the app's FIN = %q, want CLOSE-WAIT", got)
	}
	c.Close()
	a.Close()
	deadline := time.Now().Add(waitLimit)
	for sc.State() != "CLOSED" && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := sc.State(); got != "CLOSED" {
		t.Errorf("State after both FINs = %q, want CLOSED", got)
	}
}

func connCloseWrite(t *testing.T, newStack NewStack) {
	a, c := newConnRig(t, newStack).dial(t)
	write(t, "Conn", c, "banner")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, "app", a); err != nil || string(got) != "banner" {
		t.Fatalf("app read %q, %v; want the data, then EOF (the FIN after it)", got, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after CloseWrite: %v, want net.ErrClosed", err)
	}
	// The receive side keeps working.
	write(t, "app", a, "reply")
	a.CloseWrite()
	if got, err := readAll(t, "Conn", c); err != nil || string(got) != "reply" {
		t.Fatalf("Conn read after CloseWrite %q, %v; want the app's reply", got, err)
	}
}

func connAppReset(t *testing.T, newStack NewStack) {
	a, c := newConnRig(t, newStack).dial(t)
	write(t, "app", a, "x")
	buf := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	a.Abort()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := c.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after the app's RST: %v, want ECONNRESET", err)
	}
	c.SetWriteDeadline(time.Now().Add(waitLimit))
	if _, err := c.Write([]byte("y")); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("Write after the app's RST: %v, want ECONNRESET", err)
	}
}

func connAbort(t *testing.T, newStack NewStack) {
	a, c := newConnRig(t, newStack).dial(t)
	write(t, "Conn", c, "never mind")
	if err := c.Abort(); err != nil {
		t.Fatal(err)
	}
	// gVisor's app reports a RST as "connection reset by peer"; the data
	// before it may or may not have arrived, but the stream must not end
	// as if closed.
	_, err := readAll(t, "app", a)
	if err == nil {
		t.Fatal("the app read a clean EOF, want a reset")
	}
	if msg := err.Error(); !strings.Contains(msg, "reset") {
		t.Fatalf("app read error %q, want a connection reset", msg)
	}
}

func connClose(t *testing.T, newStack NewStack) {
	_, c := newConnRig(t, newStack).dial(t)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		done <- err
	}()
	// Close must unblock the Read whether or not it has started waiting.
	time.AfterFunc(10*time.Millisecond, func() { c.Close() })
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read unblocked by Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
}

func connCloseRead(t *testing.T, newStack NewStack) {
	a, c := newConnRig(t, newStack).dial(t)
	if err := c.CloseRead(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after CloseRead: %v, want net.ErrClosed", err)
	}
	// Writing still works.
	write(t, "Conn", c, "still here")
	c.CloseWrite()
	if got, err := readAll(t, "app", a); err != nil || string(got) != "still here" {
		t.Fatalf("app read %q, %v; want the data written after CloseRead", got, err)
	}
}

func connReadDeadline(t *testing.T, newStack NewStack) {
	_, c := newConnRig(t, newStack).dial(t)
	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past its deadline: %v, want a timeout wrapping os.ErrDeadlineExceeded", err)
	}
}
