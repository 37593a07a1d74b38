package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/netlab"
)

// connectProxy is an HTTP CONNECT proxy in S that counts the tunnels it
// opens, so a test can tell which flows went through it.
type connectProxy struct{ tunnels atomic.Int32 }

func (p *connectProxy) serve(lab *netlab.Lab) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		up, err := lab.Server().DialContext(context.Background(), "tcp", req.Host)
		if err != nil {
			fmt.Fprint(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer up.Close()
		p.tunnels.Add(1)
		fmt.Fprint(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() {
			_, _ = io.Copy(up, br)
			_ = up.(*net.TCPConn).CloseWrite()
		}()
		_, _ = io.Copy(c, up)
	}
}

// Fixed ports: every test has namespaces of its own.
const (
	proxyPort    = "3128"
	viaProxyPort = "8001"
	directPort   = "8002"
)

// TestRules_ChooseTheOutboundPerFlow: route.rules send one port through an
// HTTP CONNECT outbound, refuse another at once (reject), leave a third
// unanswered (drop), and the rest go direct (route.final); both stacks.
func TestRules_ChooseTheOutboundPerFlow(t *testing.T) {
	cfg := fmt.Sprintf(`outbounds:
  - name: web
    kind: http
    address: %s:%s
route:
  rules:
    - ip_cidr: [%s/32]
      port: [%s]
      network: tcp
      outbound: web
    - port: [25]
      outbound: reject
    - port_range: ["26-27"]
      outbound: drop
  final: direct
`, netlab.AltServerAddr4, proxyPort, netlab.ServerAddr4, viaProxyPort)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and a TUN device")
	}
	for _, kind := range []string{"custom", "gvisor"} {
		t.Run(kind, func(t *testing.T) {
			e := startGateway(t, kind, "--config", path)
			proxy := &connectProxy{}
			e.listen(t, netlab.AltServerAddr4+":"+proxyPort, proxy.serve(e.lab))
			listenEcho(t, e.lab, netlab.ServerAddr4+":"+viaProxyPort)
			listenEcho(t, e.lab, netlab.ServerAddr4+":"+directPort)

			for _, c := range []struct {
				port    string
				tunnels int32
			}{{viaProxyPort, 1}, {directPort, 1}, {viaProxyPort, 2}} {
				conn, err := e.dial(t.Context(), netlab.ServerAddr4+":"+c.port)
				if err != nil {
					t.Fatalf("port %s: %v", c.port, err)
				}
				roundTrip(t, conn, "tcp")
				if got := proxy.tunnels.Load(); got != c.tunnels {
					t.Errorf("after port %s: %d tunnels through the web outbound, want %d", c.port, got, c.tunnels)
				}
			}

			start := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			_, err := e.dial(ctx, netlab.ServerAddr4+":25")
			cancel()
			if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 2*time.Second {
				t.Errorf("port 25 (reject): %v after %v; want connection refused at once", err, time.Since(start))
			}

			// UDP to the reject port: an ICMP port unreachable, so the
			// connected socket's read fails with ECONNREFUSED.
			uc, err := e.lab.Client().DialContext(t.Context(), "udp", netlab.ServerAddr4+":25")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = uc.Write([]byte("hello"))
			_ = uc.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = uc.Read(make([]byte, 64))
			uc.Close()
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("udp to port 25 (reject): %v; want connection refused (ICMP port unreachable)", err)
			}

			ctx, cancel = context.WithTimeout(t.Context(), 1500*time.Millisecond)
			_, err = e.dial(ctx, netlab.ServerAddr4+":26")
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("port 26 (drop): %v; want no answer until the client gives up", err)
			}
			e.stop(t) // the log is complete once the gateway has exited
			logs := e.logs()
			for _, want := range []string{`outbound=web`, `outbound=reject`, `outbound=drop`, `outbound=direct`} {
				if !containsLine(logs, "flow routed", want) {
					t.Errorf("no debug line routing a flow with %s", want)
				}
			}
		})
	}
}

func containsLine(logs, a, b string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(line, a) && strings.Contains(line, b) {
			return true
		}
	}
	return false
}

// TestRules_SniffedHostChoosesTheOutbound: with route.sniff, a flow to a
// plain address is routed by the Host of its first bytes; the bytes reach
// the upstream unchanged.
func TestRules_SniffedHostChoosesTheOutbound(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and a TUN device")
	}
	path := filepath.Join(t.TempDir(), "sniff.yaml")
	if err := os.WriteFile(path, []byte("route:\n  sniff: true\n  rules:\n    - domain_suffix: [blocked.example]\n      outbound: reject\n  final: direct\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startGateway(t, "custom", "--config", path)
	addr := listenEcho(t, e.lab, netlab.ServerAddr4+":8080")
	for host, allowed := range map[string]bool{"www.allowed.example": true, "www.blocked.example": false} {
		c, err := e.dial(t.Context(), addr)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		req := "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(req))
		_, err = io.ReadFull(c, got)
		c.Close()
		switch {
		case allowed && (err != nil || string(got) != req):
			t.Errorf("%s: echo %q, %v; want the request back", host, got, err)
		case !allowed && !errors.Is(err, syscall.ECONNRESET):
			t.Errorf("%s: %v; want a reset (rejected after sniffing)", host, err)
		}
	}
	e.stop(t) // the log is complete once the gateway has exited
	if !containsLine(e.logs(), "tcp sniffed", "domain=www.blocked.example") {
		t.Errorf("no sniff logged")
	}
}
