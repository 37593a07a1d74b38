package proxytest_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tungate/tungate/proxy/proxytest"
	"github.com/tungate/tungate/stack"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var flow = stack.FlowID{
	Src: netip.MustParseAddrPort("198.18.0.1:40000"),
	Dst: netip.MustParseAddrPort("198.19.0.2:80"),
}

func TestRequest_AcceptConnectsAppAndRecordsDecision(t *testing.T) {
	r := proxytest.NewRequest(t, flow)
	c, err := r.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	<-r.Decided()
	if d := r.Decision(); !d.Accepted || d.Calls != 1 {
		t.Fatalf("decision %+v", d)
	}
	if c.ID() != flow {
		t.Fatalf("ID %v", c.ID())
	}
	app := r.App()
	app.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	// Abort is a real RST.
	c.Abort()
	app.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := app.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app read after Abort: %v, want ECONNRESET", err)
	}
}

func TestRequest_RecordsEveryCall(t *testing.T) {
	r := proxytest.NewRequest(t, flow)
	r.Reject(true)
	if _, err := r.Accept(context.Background()); err == nil {
		t.Fatal("Accept after Reject succeeded")
	}
	if d := r.Decision(); !d.Rejected || !d.Reset || d.Calls != 2 {
		t.Fatalf("decision %+v, want two calls recorded", d)
	}
}

func TestRequest_FailAccept(t *testing.T) {
	r := proxytest.NewRequest(t, flow)
	r.FailAccept(syscall.ECONNRESET)
	if _, err := r.Accept(context.Background()); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Accept: %v", err)
	}
	if r.App() != nil {
		t.Fatal("App set after a failed Accept")
	}
}

func TestPacketConnPair_ExchangesDatagrams(t *testing.T) {
	st, app := proxytest.NewPacketConnPair(t, flow)
	if _, err := app.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := st.Read(buf)
	if err != nil || string(buf[:n]) != "query" {
		t.Fatalf("stack read %q, %v", buf[:n], err)
	}
	st.Write([]byte("answer"))
	app.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err = app.Read(buf)
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("app read %q, %v", buf[:n], err)
	}
}
