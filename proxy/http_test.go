package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
)

// httpProxy is a minimal HTTP CONNECT proxy for tests. It answers every
// CONNECT with Response; on 2xx it sends Banner in the same write as the
// response header and then echoes the tunnel, without dialing anywhere.
type httpProxy struct {
	ln *net.TCPListener
	// Response is the status line and headers, without the final CRLF.
	response string
	banner   string

	mu   sync.Mutex // guards reqs
	reqs []*http.Request
	wg   sync.WaitGroup
}

func startHTTPProxy(t *testing.T, response, banner string) *httpProxy {
	s := &httpProxy{ln: listenTCP(t), response: response, banner: banner}
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer c.Close()
				s.serve(c)
			})
		}
	})
	t.Cleanup(func() {
		s.ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *httpProxy) addr() string { return s.ln.Addr().String() }

func (s *httpProxy) requests() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

func (s *httpProxy) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(waitLimit))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	io.WriteString(c, s.response+"\r\n\r\n"+s.banner)
	if !strings.Contains(s.response, " 200 ") {
		return
	}
	c.SetDeadline(time.Time{})
	io.Copy(c, br)
	// Half-close like a careful proxy, so the client sees EOF.
	c.(*net.TCPConn).CloseWrite()
}

func TestHTTP_ConnectPreservesBytesSentWithResponse(t *testing.T) {
	srv := startHTTPProxy(t, "HTTP/1.1 200 Connection established\r\nVia: test", "early tunnel bytes")
	c, err := proxy.NewHTTP(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:8443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectTunnel(t, c, "early tunnel bytes")
	r := srv.requests()
	if len(r) != 1 || r[0].Method != "CONNECT" || r[0].RequestURI != "127.0.0.1:8443" || r[0].Host != "127.0.0.1:8443" {
		t.Fatalf("proxy saw %+v, want CONNECT 127.0.0.1:8443 with that Host", r)
	}
	if r[0].Header.Get("Proxy-Authorization") != "" {
		t.Errorf("Proxy-Authorization sent without credentials")
	}
}

func TestHTTP_TunnelHalfClosesThroughBufferedConn(t *testing.T) {
	srv := startHTTPProxy(t, "HTTP/1.1 200 OK", "x")
	c, err := proxy.NewHTTP(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); ok {
		t.Fatal("the banner was not read with the response header; the buffered path is not exercised")
	}
	expectTunnel(t, c, "x")
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", c)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	wantEOF(t, c, "client")
}

func TestHTTP_SendsBasicProxyAuthorization(t *testing.T) {
	srv := startHTTPProxy(t, "HTTP/1.1 200 OK", "")
	c, err := proxy.NewHTTP(srv.addr(), "Aladdin", "open sesame", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// RFC 7617 §2's example credentials.
	if got := srv.requests()[0].Header.Get("Proxy-Authorization"); got != "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==" {
		t.Fatalf("Proxy-Authorization = %q", got)
	}
}

func TestHTTP_BracketsIPv6Authority(t *testing.T) {
	srv := startHTTPProxy(t, "HTTP/1.1 502 Bad Gateway", "")
	proxy.NewHTTP(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "[2001:2::1]:443")
	if r := srv.requests(); len(r) != 1 || r[0].RequestURI != "[2001:2::1]:443" {
		t.Fatalf("proxy saw %+v, want CONNECT [2001:2::1]:443", r)
	}
}

func TestHTTP_SkipsInterimResponses(t *testing.T) {
	srv := startHTTPProxy(t, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", "after")
	c, err := proxy.NewHTTP(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectTunnel(t, c, "after")
}

func TestHTTP_FailureStatusesMapToKernelErrors(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   error
	}{
		{"403 Forbidden", syscall.EACCES},
		{"407 Proxy Authentication Required", syscall.EACCES},
		{"502 Bad Gateway", syscall.ECONNREFUSED},
		{"503 Service Unavailable", syscall.ECONNREFUSED},
		{"504 Gateway Timeout", syscall.ETIMEDOUT},
		{"500 Internal Server Error", nil},
		{"301 Moved Permanently", nil},
	} {
		t.Run(tc.status, func(t *testing.T) {
			srv := startHTTPProxy(t, "HTTP/1.1 "+tc.status, "")
			_, err := proxy.NewHTTP(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
			if err == nil {
				t.Fatal("dial succeeded")
			}
			if !strings.Contains(err.Error(), tc.status) {
				t.Errorf("error %q does not quote the status", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("dial error %v, want %v", err, tc.want)
			}
			if tc.want == nil && errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial error %v claims a refusal", err)
			}
		})
	}
}

func TestHTTP_MalformedResponseFails(t *testing.T) {
	for _, resp := range []string{"SSH-2.0-OpenSSH", "HTTP/1.1 2000 OK", "HTTP/2 200"} {
		srv := startHTTPProxy(t, resp, "")
		_, err := proxy.NewHTTP(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
		if err == nil {
			t.Errorf("response %q: dial succeeded", resp)
		}
	}
}

func TestHTTP_OversizedResponseHeaderFails(t *testing.T) {
	huge := "HTTP/1.1 200 OK" + strings.Repeat("\r\nX-Pad: "+strings.Repeat("a", 1000), 100)
	srv := startHTTPProxy(t, huge, "")
	_, err := proxy.NewHTTP(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("dial error %v, want a header size error", err)
	}
}

func TestHandleTCP_HTTPProxyRefusalResetsApp(t *testing.T) {
	srv := startHTTPProxy(t, "HTTP/1.1 503 Service Unavailable", "")
	h := newHarness(t, proxy.Options{Dialer: proxy.NewHTTP(srv.addr(), "", "", nil)})
	req, done := h.handleTCP("127.0.0.1:80")
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset {
		t.Fatalf("decision = %+v, want Reject(true)", d)
	}
	if s := h.p.Stats(); s.TCPRefused != 1 {
		t.Fatalf("stats = %+v, want one refusal", s)
	}
}

func TestHandleTCP_RelaysThroughHTTPProxy(t *testing.T) {
	srv := startHTTPProxy(t, "HTTP/1.1 200 OK", "hello from upstream")
	h := newHarness(t, proxy.Options{Dialer: proxy.NewHTTP(srv.addr(), "", "", nil)})
	req, done := h.handleTCP("127.0.0.1:80")
	waitClosed(t, req.Decided(), "decision")
	app := req.App()
	if app == nil {
		t.Fatalf("decision = %+v, want Accept", req.Decision())
	}
	expectTunnel(t, app, "hello from upstream")
	for i := range 3 {
		transfer(t, app, app, fmt.Sprintf("message %d", i))
	}
	app.CloseWrite()
	wantEOF(t, app, "app")
	waitClosed(t, done, "relay end")
}
