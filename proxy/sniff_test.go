package proxy_test

import (
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
)

// clientHello returns the first bytes a Go TLS client sends for name.
func clientHello(t testing.TB, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		_ = c.Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestSniffDomain_TLSServerName(t *testing.T) {
	hello := clientHello(t, "WWW.Example.test")
	if d, r := proxy.SniffDomain(hello); r != proxy.SniffFound || d != "www.example.test" {
		t.Errorf("full hello: %q, %d", d, r)
	}
	for _, n := range []int{1, 4, 5, 40, len(hello) - 1} {
		if d, r := proxy.SniffDomain(hello[:n]); r != proxy.SniffMore {
			t.Errorf("first %d bytes: %q, %d; want more", n, d, r)
		}
	}
	if _, r := proxy.SniffDomain(clientHello(t, "")); r != proxy.SniffNone {
		t.Errorf("hello without a name: %d, want none", r)
	}
}

func TestSniffDomain_HTTPHost(t *testing.T) {
	for req, want := range map[string]string{
		"GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n":           "www.example.test",
		"POST /x HTTP/1.1\r\nUser-Agent: a\r\nhost: A.test:8080\r\n": "a.test",
	} {
		if d, r := proxy.SniffDomain([]byte(req)); r != proxy.SniffFound || d != want {
			t.Errorf("%q: %q, %d; want %q", req, d, r, want)
		}
	}
	for req, want := range map[string]proxy.SniffResult{
		"GE":                        proxy.SniffMore,
		"GET / HTTP/1.1\r\nAccept:": proxy.SniffMore,
		"GET / HTTP/1.1\r\n\r\n":    proxy.SniffNone, // no Host
		"SSH-2.0-OpenSSH_9.2\r\n":   proxy.SniffNone,
		"GET / HTTP/1.1\r\nHost: 198.19.0.2\r\n\r\n": proxy.SniffNone, // an address, no name
	} {
		if d, r := proxy.SniffDomain([]byte(req)); r != want {
			t.Errorf("%q: %q, %d; want %d", req, d, r, want)
		}
	}
}

func FuzzSniffDomain(f *testing.F) {
	f.Add(clientHello(f, "a.test"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, r := proxy.SniffDomain(b)
		if (r == proxy.SniffFound) != (d != "") {
			t.Fatalf("result %d with domain %q", r, d)
		}
	})
}

func TestSniff_RoutesByTheHostAndSendsTheBytesUpstream(t *testing.T) {
	ln := listenTCP(t)
	var sniffed atomic.Value
	h := newHarness(t, proxy.Options{
		SniffTimeout: 5 * time.Second, // found long before
		Router: func(stack.FlowID, string) proxy.Route {
			return proxy.Route{Sniff: func(domain string) proxy.Route {
				sniffed.Store(domain)
				return proxy.Route{Outbound: "web", Rule: 2, Dialer: proxy.NewDirect(proxy.DirectOptions{}), Address: ln.Addr().String()}
			}}
		},
	})
	req, _ := h.handleTCP("198.19.0.9:80")
	waitClosed(t, req.Decided(), "decision")
	if !req.Decision().Accepted {
		t.Fatalf("decision %+v: a sniffed flow is accepted first", req.Decision())
	}
	const head = "GET / HTTP/1.1\r\nHost: www.example.test\r\n\r\n"
	if _, err := req.App().Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	up := acceptTCP(t, ln)
	defer up.Close()
	got := make([]byte, len(head))
	_ = up.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(up, got); err != nil || string(got) != head {
		t.Fatalf("upstream got %q, %v", got, err)
	}
	transfer(t, up, req.App(), "reply")
	if d, _ := sniffed.Load().(string); d != "www.example.test" {
		t.Errorf("routed with domain %q", d)
	}
	if s := h.p.Stats(); s.TCPSniffed != 1 || s.TCPSniffedName != 1 {
		t.Errorf("stats %+v", s)
	}
	// The sniffed bytes count as the connection's upload.
	waitConnections(t, h.p, 1, func(c proxy.ConnInfo) bool { return c.Up == uint64(len(head)) && c.Down == 5 })
}

func TestSniff_ServerFirstProtocolWaitsTheTimeoutOnce(t *testing.T) {
	ln := listenTCP(t)
	h := newHarness(t, proxy.Options{
		SniffTimeout: 20 * time.Millisecond,
		Router: func(stack.FlowID, string) proxy.Route {
			return proxy.Route{Sniff: func(domain string) proxy.Route {
				if domain != "" {
					t.Errorf("found %q in nothing", domain)
				}
				return proxy.Route{Outbound: "d", Rule: -1, Dialer: proxy.NewDirect(proxy.DirectOptions{}), Address: ln.Addr().String()}
			}}
		},
	})
	req, _ := h.handleTCP("198.19.0.9:25")
	up := acceptTCP(t, ln)
	defer up.Close()
	transfer(t, up, req.App(), "220 smtp ready")
	transfer(t, req.App(), up, "HELO")
}

func TestSniff_RejectAfterSniffingResetsTheApp(t *testing.T) {
	h := newHarness(t, proxy.Options{
		Router: func(stack.FlowID, string) proxy.Route {
			return proxy.Route{Sniff: func(string) proxy.Route { return proxy.Route{Outbound: "reject", Rule: 0, Action: proxy.ActionReject} }}
		},
	})
	req, done := h.handleTCP("198.19.0.9:443")
	waitClosed(t, req.Decided(), "decision")
	if _, err := req.App().Write(clientHello(t, "blocked.test")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, done, "handler")
	wantReset(t, req.App(), "app")
	if s := h.p.Stats(); s.TCPRouteRejected != 1 || s.TCPSniffedName != 1 {
		t.Errorf("stats %+v", s)
	}
	// The flow's end is reported, so that observers (a trace) close it.
	if e, ok := h.events.first(proxy.EventReject); !ok || e.Err == nil {
		t.Errorf("events %v, want a reject with its reason", h.events.all())
	}
}
