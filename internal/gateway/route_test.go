package gateway

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
)

func routedConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Outbounds = []config.Outbound{
		{Name: "proxy", Kind: config.UpstreamSOCKS5, Address: "198.19.0.5:1080", ConnectTimeout: 3 * time.Second},
	}
	cfg.Route.Rules = []config.Rule{
		{IPCIDR: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24")}, Network: "tcp", Outbound: "proxy"},
		{Port: []uint16{25}, Outbound: config.OutboundReject},
		{PortRange: []string{"6000-6999"}, Outbound: config.OutboundDrop},
	}
	cfg.Route.Final = config.OutboundDirect
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRouter_FollowsTheRules(t *testing.T) {
	cfg := routedConfig(t)
	route, r := testRouter(t, cfg)
	obs := r.obs
	flow := func(dst string) stack.FlowID {
		return stack.FlowID{Src: netip.MustParseAddrPort("198.18.0.1:40000"), Dst: netip.MustParseAddrPort(dst)}
	}
	for _, c := range []struct {
		dst, network string
		outbound     string
		rule         int
		action       proxy.Action
		dialer       proxy.Dialer
		timeout      time.Duration
	}{
		{"198.19.0.2:80", "tcp", "proxy", 0, proxy.ActionDial, obs["proxy"].tcp, 3 * time.Second},
		{"198.19.0.2:80", "udp", "direct", -1, proxy.ActionDial, obs["direct"].udp, 0},
		{"198.18.5.5:25", "tcp", "reject", 1, proxy.ActionReject, nil, 0},
		{"198.18.5.5:6500", "udp", "drop", 2, proxy.ActionDrop, nil, 0},
		{"198.18.5.5:443", "tcp", "direct", -1, proxy.ActionDial, obs["direct"].tcp, 0},
	} {
		rt := route(flow(c.dst), c.network)
		if rt.Outbound != c.outbound || rt.Rule != c.rule || rt.Action != c.action || rt.Dialer != c.dialer || rt.ConnectTimeout != c.timeout {
			t.Errorf("%s %s: %+v, want outbound %s rule %d action %d timeout %v", c.network, c.dst, rt, c.outbound, c.rule, c.action, c.timeout)
		}
	}
	// Each rule chose one flow, the final outbound two.
	for i, want := range []uint64{1, 1, 1, 2} {
		if got := r.hits[i].Load(); got != want {
			t.Errorf("hits of rule %d (%s) = %d, want %d", i, r.outboundOf(i), got, want)
		}
	}
}

// countingDialer is loopbackDialer, counting its dials.
type countingDialer struct{ n atomic.Int32 }

func (c *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c.n.Add(1)
	return loopbackDialer{}.DialContext(ctx, network, addr)
}

// TestServe_RejectRuleAnswersRSTWithoutDialing: a flow a rule sends to
// reject gets a RST to its SYN, decided before any dial, on both stacks;
// the next flow, to another port, is dialed.
func TestServe_RejectRuleAnswersRSTWithoutDialing(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ln := closingListener(t)
			cfg := withStack(kind)
			cfg.Route.Rules = []config.Rule{{Port: []uint16{25}, Outbound: config.OutboundReject}}
			d := &countingDialer{}
			dev := serveWith(t, cfg, d)
			dev.Inject(syn(t, netip.MustParseAddrPort("198.18.0.1:40002"), netip.MustParseAddrPort("198.19.0.2:25")))
			seg := nextTCP(t, dev)
			if !seg.Flags().Has(packet.RST) || seg.Ack() != 1001 {
				t.Fatalf("got %v ack %d; want RST acking the SYN", seg.Flags(), seg.Ack())
			}
			if n := d.n.Load(); n != 0 {
				t.Fatalf("the rejected flow was dialed %d times", n)
			}
			dev.Inject(syn(t, netip.MustParseAddrPort("198.18.0.1:40003"), upstream(ln.Addr().String())))
			if seg := nextTCP(t, dev); seg.Flags() != packet.SYN|packet.ACK || d.n.Load() != 1 {
				t.Fatalf("next flow: %v after %d dials; want SYN-ACK after 1", seg.Flags(), d.n.Load())
			}
		})
	}
}

func TestRouter_SniffRoutesByTheNameInTheFirstBytes(t *testing.T) {
	cfg := config.Default()
	cfg.Route.Sniff = true
	cfg.Route.Rules = []config.Rule{{DomainSuffix: []string{"example.test"}, Outbound: config.OutboundReject}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	route, _ := testRouter(t, cfg)
	id := stack.FlowID{Src: netip.MustParseAddrPort("198.18.0.1:40000"), Dst: netip.MustParseAddrPort("198.19.0.2:443")}
	rt := route(id, "tcp")
	if rt.Sniff == nil {
		t.Fatal("a TCP flow with no known domain is not sniffed")
	}
	if got := rt.Sniff("www.example.test"); got.Outbound != config.OutboundReject || got.Rule != 0 {
		t.Errorf("sniffed www.example.test: %+v", got)
	}
	if got := rt.Sniff(""); got.Outbound != config.OutboundUpstream || got.Rule != -1 {
		t.Errorf("nothing sniffed: %+v", got)
	}
	if route(id, "udp").Sniff != nil {
		t.Error("a UDP flow is sniffed")
	}
}

// closingListener listens on loopback and closes every connection it
// accepts, until the test ends.
func closingListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func TestOutbounds_UDPLeavesOnlyThroughItsOutbound(t *testing.T) {
	cfg := config.Default()
	cfg.Upstream = config.Upstream{Kind: config.UpstreamSOCKS5, Address: "198.19.0.5:1080", ConnectTimeout: time.Second}
	cfg.Outbounds = []config.Outbound{
		{Name: "socks-udp", Kind: config.UpstreamSOCKS5, Address: "198.19.0.5:1080", UDP: true},
		{Name: "socks-tcp", Kind: config.UpstreamSOCKS5, Address: "198.19.0.5:1080"},
		{Name: "web", Kind: config.UpstreamHTTP, Address: "198.19.0.5:3128"},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	obs, err := outbounds(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := obs["socks-udp"].udp.(proxy.PacketDialer); !ok || obs["socks-udp"].udp != obs["socks-udp"].tcp {
		t.Errorf("socks-udp carries UDP with %T, want its own SOCKS5 dialer (UDP ASSOCIATE)", obs["socks-udp"].udp)
	}
	for _, name := range []string{config.OutboundUpstream, "socks-tcp", "web"} {
		if obs[name].udp != nil {
			t.Errorf("%s carries UDP with %T; a proxy outbound without udp must refuse it", name, obs[name].udp)
		}
	}
	if _, ok := obs[config.OutboundDirect].udp.(proxy.PacketDialer); !ok {
		t.Errorf("direct carries UDP with %T, want a PacketDialer", obs[config.OutboundDirect].udp)
	}
}

// testRouter is the router of cfg's routing, without the DNS side.
func testRouter(t *testing.T, cfg *config.Config) (proxy.Router, *routing) {
	t.Helper()
	r, err := buildRouting(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur atomic.Pointer[routing]
	cur.Store(r)
	return router(&cur, nil, slog.New(slog.DiscardHandler)), r
}
