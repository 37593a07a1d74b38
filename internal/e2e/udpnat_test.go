package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/tungate/tungate/internal/netlab"
)

// stunLike serves a STUN-like probe in S: a datagram to the mirror gets
// back the source address it came from ("mapped 198.19.0.1:40123"); a
// datagram "poke ADDR" makes the stranger, a socket the app never sent
// to, send "from the stranger" to ADDR. It returns the mirror and the
// stranger addresses.
func stunLike(t *testing.T, lab *netlab.Lab, mirrorAt string) (mirror, stranger netip.AddrPort) {
	t.Helper()
	m, err := lab.Server().ListenPacket("udp", mirrorAt)
	if err != nil {
		t.Fatal(err)
	}
	s, err := lab.Server().ListenPacket("udp", netlab.ServerAddr4+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		s.Close()
	})
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := m.ReadFrom(buf)
			if err != nil {
				return
			}
			if target, ok := strings.CutPrefix(string(buf[:n]), "poke "); ok {
				if ua, err := net.ResolveUDPAddr("udp", target); err == nil {
					_, _ = s.WriteTo([]byte("from the stranger"), ua)
				}
				continue
			}
			_, _ = m.WriteTo([]byte("mapped "+from.String()), from)
		}
	}()
	return m.LocalAddr().(*net.UDPAddr).AddrPort(), s.LocalAddr().(*net.UDPAddr).AddrPort()
}

// ask sends msg from c to dst until an answer comes (UDP may lose the
// first while the gateway sets the session up) and returns it and its
// source.
func ask(t *testing.T, c net.PacketConn, dst netip.AddrPort, msg string) (string, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 1500)
	for range 10 {
		if _, err := c.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatalf("send to %v: %v", dst, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, from, err := c.ReadFrom(buf)
		if err == nil {
			ap := from.(*net.UDPAddr).AddrPort()
			return string(buf[:n]), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	t.Fatalf("no answer from %v to %q", dst, msg)
	return "", netip.AddrPort{}
}

// TestUDP_FullConeMappingAndFiltering is the STUN-like probe through the
// gateway: one app socket asks two servers on different addresses which
// address they see, and a third socket it never sent to writes to that
// address. Full cone (the default): both see the same mapped address
// (endpoint-independent mapping) and the stranger's datagram reaches the
// app, from the stranger (endpoint-independent filtering).
func TestUDP_FullConeMappingAndFiltering(t *testing.T) {
	forEachStack(t, func(t *testing.T, e *env) {
		a, stranger := stunLike(t, e.lab, netlab.ServerAddr4+":3478")
		b, _ := stunLike(t, e.lab, netlab.AltServerAddr4+":3479")
		app, err := e.lab.Client().ListenPacket("udp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		mappedA, _ := ask(t, app, a, "where am I?")
		mappedB, _ := ask(t, app, b, "where am I?")
		if mappedA != mappedB {
			t.Fatalf("server A saw %q, server B %q: the mapping depends on the destination", mappedA, mappedB)
		}
		mapped := strings.TrimPrefix(mappedA, "mapped ")
		got, from := ask(t, app, a, "poke "+mapped)
		if got != "from the stranger" || from != stranger {
			t.Fatalf("after the poke the app got %q from %v, want the stranger's datagram from %v", got, from, stranger)
		}
	})
}

// TestUDP_PortUnreachableIsECONNREFUSED: a datagram to a closed port in S
// draws an ICMP port unreachable there; the app's connected socket fails
// with ECONNREFUSED, as without the gateway, over IPv4 and IPv6.
func TestUDP_PortUnreachableIsECONNREFUSED(t *testing.T) {
	forEachStack(t, func(t *testing.T, e *env) {
		for _, host := range []string{netlab.ServerAddr4, "[" + netlab.ServerAddr6 + "]"} {
			c, err := e.lab.Client().DialContext(t.Context(), "udp", host+":9")
			if err != nil {
				t.Fatal(err)
			}
			var rerr error
			buf := make([]byte, 100)
			for range 10 {
				c.Write([]byte("discard?"))
				_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				if _, rerr = c.Read(buf); rerr != nil && !os.IsTimeout(rerr) {
					break
				}
			}
			c.Close()
			if !errors.Is(rerr, syscall.ECONNREFUSED) {
				t.Errorf("%s: read error %v, want ECONNREFUSED", host, rerr)
			}
		}
	})
}

// danteConf lets any client in the lab use UDP ASSOCIATE without
// authentication, listening on addr and leaving from S's address.
const danteConf = `logoutput: stderr
internal: %s port = %s
external: %s
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
	from: 0.0.0.0/0 to: 0.0.0.0/0
}
socks pass {
	from: 0.0.0.0/0 to: 0.0.0.0/0
	command: connect udpassociate udpreply
}
`

// TestUDP_ThroughSOCKS5UDPAssociate runs the gateway with a real SOCKS5
// server (Dante) as its upstream, with upstream.udp: a UDP echo and a DNS
// query (to dnsmasq) go through UDP ASSOCIATE, and reach their servers
// from the proxy's address, not the gateway's.
func TestUDP_ThroughSOCKS5UDPAssociate(t *testing.T) {
	danted := needTool(t, "danted", "dante-server")
	dnsmasq := needTool(t, "dnsmasq", "dnsmasq-base")
	for _, kind := range stacks {
		t.Run(kind, func(t *testing.T) {
			const socksPort = "1080"
			e := startGateway(t, kind, "--upstream", "socks5", "--upstream-address", netlab.AltServerAddr4+":"+socksPort, "--upstream-udp")
			s := e.lab.Server()
			conf := filepath.Join(t.TempDir(), "danted.conf")
			if err := os.WriteFile(conf, []byte(fmt.Sprintf(danteConf, netlab.AltServerAddr4, socksPort, netlab.AltServerAddr4)), 0o644); err != nil {
				t.Fatal(err)
			}
			danteLog := new(lockedBuffer)
			startDaemon(t, s, danteLog, danted, "-f", conf, "-N", "1")
			startDaemon(t, s, new(lockedBuffer), dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
				"--pid-file=", "--user=root", "--listen-address="+netlab.ServerAddr4, "--bind-interfaces",
				"--address=/game.test/"+netlab.ServerAddr4)
			waitListening(t, s, netlab.AltServerAddr4+":"+socksPort)

			// The echo server tells who it sees.
			srv, err := s.ListenPacket("udp", netlab.ServerAddr4+":7000")
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			go func() {
				buf := make([]byte, 1500)
				for {
					n, from, err := srv.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = srv.WriteTo(append(buf[:n:n], " seen from "+from.(*net.UDPAddr).IP.String()...), from)
				}
			}()
			app, err := e.lab.Client().ListenPacket("udp", "0.0.0.0:0")
			if err != nil {
				t.Fatal(err)
			}
			defer app.Close()
			got, from := ask(t, app, netip.MustParseAddrPort(netlab.ServerAddr4+":7000"), "ping")
			if got != "ping seen from "+netlab.AltServerAddr4 || from.String() != netlab.ServerAddr4+":7000" {
				t.Fatalf("echo %q from %v, want it seen from the proxy (%s) and answered from the server\ndante:\n%s\ngateway:\n%s",
					got, from, netlab.AltServerAddr4, danteLog, tail(e.logs(), 40))
			}

			c, err := e.lab.Client().DialContext(t.Context(), "udp", netlab.ServerAddr4+":53")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			q := new(dns.Msg)
			q.SetQuestion("lobby.game.test.", dns.TypeA)
			dc := &dns.Conn{Conn: c}
			var r *dns.Msg
			for range 5 { // the first may be lost while the association is set up
				if err := dc.WriteMsg(q); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				if r, err = dc.ReadMsg(); err == nil {
					break
				}
			}
			if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != netlab.ServerAddr4 {
				t.Fatalf("DNS answer %v, %v; want lobby.game.test A %s", r, err, netlab.ServerAddr4)
			}
		})
	}
}

// TestUDP_SymmetricMapsPerDestination: with udp.nat symmetric the same
// probe sees one mapping per destination, and the stranger is not heard.
func TestUDP_SymmetricMapsPerDestination(t *testing.T) {
	e := startGateway(t, "custom", "--udp-nat", "symmetric")
	a, _ := stunLike(t, e.lab, netlab.ServerAddr4+":3478")
	b, _ := stunLike(t, e.lab, netlab.AltServerAddr4+":3479")
	app, err := e.lab.Client().ListenPacket("udp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	mappedA, _ := ask(t, app, a, "where am I?")
	mappedB, _ := ask(t, app, b, "where am I?")
	if mappedA == mappedB {
		t.Fatalf("both servers saw %q: symmetric NAT must map each destination apart", mappedA)
	}
	if _, err := app.WriteTo([]byte("poke "+strings.TrimPrefix(mappedA, "mapped ")), net.UDPAddrFromAddrPort(a)); err != nil {
		t.Fatal(err)
	}
	_ = app.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, from, err := app.ReadFrom(make([]byte, 100)); err == nil {
		t.Fatalf("the app heard %d bytes from %v: a symmetric mapping filters remotes it did not send to", n, from)
	}
}
