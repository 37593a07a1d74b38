package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/tun/tuntest"
)

// recordingDialer notes the addresses it is asked for and connects each to
// one loopback listener.
type recordingDialer struct {
	to    string
	mu    sync.Mutex
	asked []string
}

func (r *recordingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	r.mu.Lock()
	r.asked = append(r.asked, address)
	r.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, r.to)
}

func (r *recordingDialer) addresses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.asked...)
}

func hijackConfig(kind string) *config.Config {
	cfg := withStack(kind)
	cfg.DNS.Hijack = true
	cfg.DNS.Servers = []string{"127.0.0.1:9"} // never asked: every query here is answered with a fake address
	cfg.DNS.CacheFile = ""
	return cfg
}

// dnsQuery sends an A query for name from app to a resolver address no
// server has and returns the answer the gateway writes back.
func dnsQuery(t *testing.T, dev *tuntest.Device, app netip.AddrPort, name string) netip.Addr {
	t.Helper()
	q, _ := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), mdns.TypeA).Pack()
	b := make([]byte, 1500)
	n, err := packet.BuildUDP(b, packet.UDPHeader{Src: app, Dst: netip.MustParseAddrPort("198.18.0.53:53")}, q)
	if err != nil {
		t.Fatal(err)
	}
	dev.Inject(b[:n])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		out, err := dev.Next(ctx)
		if err != nil {
			t.Fatalf("no DNS answer: %v", err)
		}
		p, err := packet.ParseIP(out)
		if err != nil || p.Proto != packet.ProtoUDP {
			continue
		}
		var m mdns.Msg
		if err := m.Unpack(p.UDP().Payload()); err != nil || len(m.Answer) != 1 {
			t.Fatalf("DNS answer %v (%v)", m, err)
		}
		a, _ := netip.AddrFromSlice(m.Answer[0].(*mdns.A).A.To4())
		return a
	}
}

// TestServe_HijackedDNSAndFakeIPDialedByName: a query to any address on
// port 53 is answered with a fake address; a connection to that address is
// dialed by name; one to a fake address nobody was given gets a RST.
func TestServe_HijackedDNSAndFakeIPDialedByName(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ln := closingListener(t)
			rec := &recordingDialer{to: ln.Addr().String()}
			cfg := hijackConfig(kind)
			dev := serveWith(t, cfg, rec)
			app := netip.MustParseAddrPort("198.18.0.1:5353")
			fake := dnsQuery(t, dev, app, "www.example.test")
			if !cfg.DNS.FakeIPRange.Contains(fake) {
				t.Fatalf("answer %s is not in %s", fake, cfg.DNS.FakeIPRange)
			}
			dev.Inject(syn(t, netip.MustParseAddrPort("198.18.0.1:40010"), netip.AddrPortFrom(fake, 443)))
			if seg := nextTCP(t, dev); seg.Flags() != packet.SYN|packet.ACK {
				t.Fatalf("SYN to the fake address: %v, want SYN-ACK", seg.Flags())
			}
			if got := rec.addresses(); len(got) != 1 || got[0] != "www.example.test:443" {
				t.Errorf("upstream dialed %q, want the name", got)
			}
			unknown := netip.MustParseAddr("198.18.250.250")
			dev.Inject(syn(t, netip.MustParseAddrPort("198.18.0.1:40011"), netip.AddrPortFrom(unknown, 443)))
			for {
				seg := nextTCP(t, dev)
				if seg.DstPort() != 40011 {
					continue // the first flow's segments
				}
				if !seg.Flags().Has(packet.RST) {
					t.Fatalf("SYN to an unknown fake address: %v, want RST", seg.Flags())
				}
				break
			}
			if got := rec.addresses(); len(got) != 1 {
				t.Errorf("the unknown fake address was dialed: %q", got)
			}
		})
	}
}
