package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/rule"
	"github.com/tungate/tungate/stack"
)

// outbound is one named outbound, ready to carry flows.
type outbound struct {
	action  proxy.Action
	tcp     proxy.Dialer
	udp     proxy.Dialer
	timeout time.Duration // 0: upstream.connect_timeout
}

// outbounds builds every outbound cfg names: the built-ins and the
// outbounds list. upstream, when not nil, replaces the upstream block's TCP
// dialer (Options.Dialer).
// With the DNS side (d not nil), direct dialers look names up with
// dns.servers through their own sockets.
func outbounds(cfg *config.Config, upstream proxy.Dialer, d *dnsSide) (map[string]*outbound, error) {
	withResolver := func(up config.Upstream) proxy.DirectOptions {
		o := directOptions(up)
		o.Resolver = d.resolverVia(proxy.NewDirect(o).DialContext)
		return o
	}
	if upstream == nil {
		var err error
		if upstream, err = dialer(cfg.Upstream, withResolver(cfg.Upstream)); err != nil {
			return nil, err
		}
	}
	direct := proxy.NewDirect(withResolver(cfg.Upstream))
	m := map[string]*outbound{
		config.OutboundUpstream: {tcp: upstream, udp: udpDialer(cfg.Upstream, upstream, direct)},
		config.OutboundDirect:   {tcp: direct, udp: direct},
		config.OutboundReject:   {action: proxy.ActionReject},
		config.OutboundDrop:     {action: proxy.ActionDrop},
	}
	for _, o := range cfg.Outbounds {
		up := o.Upstream(0)
		if up.Fwmark == 0 {
			// Under auto_route every socket of the gateway needs the mark
			// its rules exempt; cfg.Upstream.Fwmark carries it.
			up.Fwmark = cfg.Upstream.Fwmark
		}
		d, err := dialer(up, withResolver(up))
		if err != nil {
			return nil, fmt.Errorf("gateway: outbound %q: %w", o.Name, err)
		}
		m[o.Name] = &outbound{tcp: d, udp: udpDialer(up, d, d), timeout: o.ConnectTimeout}
	}
	return m, nil
}

// udpDialer is the dialer of an outbound's UDP flows: direct for kind
// direct, its own (UDP ASSOCIATE) for socks5 with udp; nil, which refuses
// them, for the rest. UDP never leaves by another way than the outbound's.
func udpDialer(up config.Upstream, d, direct proxy.Dialer) proxy.Dialer {
	switch {
	case up.Kind == config.UpstreamDirect:
		return direct
	case up.Kind == config.UpstreamSOCKS5 && up.UDP:
		return d
	}
	return nil
}

// routing is what a reload replaces at once for new flows: the rules,
// the outbounds they name and the rules' hit counters. Flows already
// routed keep the dialers they got.
type routing struct {
	set   *rule.Set
	obs   map[string]*outbound
	names []string        // by rule index, the outbound each rule names; the last is the final one
	hits  []atomic.Uint64 // by rule index; the last counts the final outbound
	sniff bool
}

// buildRouting builds cfg's outbounds and rules; upstream and d are as
// for outbounds.
func buildRouting(cfg *config.Config, upstream proxy.Dialer, d *dnsSide) (*routing, error) {
	obs, err := outbounds(cfg, upstream, d)
	if err != nil {
		return nil, err
	}
	set, err := cfg.RuleSet()
	if err != nil {
		return nil, fmt.Errorf("gateway: route.rules: %w", err)
	}
	return newRouting(set, cfg.Route.Rules, obs, cfg.Route.Sniff), nil
}

func newRouting(set *rule.Set, rules []config.Rule, obs map[string]*outbound, sniff bool) *routing {
	names := make([]string, 0, len(rules)+1)
	for _, r := range rules {
		names = append(names, r.Outbound)
	}
	names = append(names, set.Final())
	return &routing{set: set, obs: obs, names: names, hits: make([]atomic.Uint64, len(names)), sniff: sniff}
}

// outboundOf is the outbound rule i (len(hits)-1: the final) names.
func (r *routing) outboundOf(i int) string { return r.names[i] }

// router chooses each flow's outbound: the DNS server for hijacked
// queries (d not nil), else by the current routing's rules, with the
// flow's domain when the DNS side knows it. A flow to a fake address is
// dialed by name. With route.sniff, a TCP flow whose domain is unknown is
// routed by the name in its first bytes.
func router(cur *atomic.Pointer[routing], d *dnsSide, log *slog.Logger) proxy.Router {
	return func(id stack.FlowID, network string) proxy.Route {
		if d != nil && id.Dst.Port() == 53 {
			log.Debug("flow routed", "flow", id, "network", network, "outbound", "dns (hijacked)")
			return proxy.Route{Outbound: "dns", Rule: -1, Dialer: d.server}
		}
		rt := cur.Load()
		f := rule.Flow{Network: rule.NetworkTCP, Src: id.Src, Dst: id.Dst}
		if network == "udp" {
			f.Network = rule.NetworkUDP
		}
		var address string
		if d != nil {
			name, fake, known := d.domain(id.Dst.Addr())
			if fake && !known {
				d.unknownFake.Add(1)
				log.Debug("flow to an unknown fake address refused", "flow", id, "network", network)
				return proxy.Route{Outbound: config.OutboundReject, Rule: -1, Action: proxy.ActionReject}
			}
			f.Domain = name
			if fake {
				address = net.JoinHostPort(name, strconv.Itoa(int(id.Dst.Port())))
			}
		}
		if rt.sniff && network == "tcp" && f.Domain == "" {
			return proxy.Route{Sniff: func(domain string) proxy.Route {
				f.Domain = domain
				return rt.pick(&f, "", log)
			}}
		}
		return rt.pick(&f, address, log)
	}
}

// pick is the route.rules choice for f, dialing address when set.
func (r *routing) pick(f *rule.Flow, address string, log *slog.Logger) proxy.Route {
	res := r.set.Match(f)
	if res.Rule >= 0 {
		r.hits[res.Rule].Add(1)
	} else {
		r.hits[len(r.hits)-1].Add(1)
	}
	ob := r.obs[res.Outbound] // Compile checked every name
	rt := proxy.Route{Outbound: res.Outbound, Rule: res.Rule, Action: ob.action, Dialer: ob.tcp,
		Address: address, Domain: f.Domain, ConnectTimeout: ob.timeout}
	if f.Network == rule.NetworkUDP {
		rt.Dialer = ob.udp
	}
	if log.Enabled(context.Background(), slog.LevelDebug) { // the arguments cost a few µs a flow
		log.Debug("flow routed", "flow", fmt.Sprintf("%v->%v", f.Src, f.Dst), "network", f.Network.String(), "domain", f.Domain,
			"rule", res.Rule, "outbound", res.Outbound)
	}
	return rt
}
