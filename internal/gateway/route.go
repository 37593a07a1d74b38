package gateway

import (
	"fmt"
	"log/slog"
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
func outbounds(cfg *config.Config, upstream proxy.Dialer) (map[string]*outbound, error) {
	if upstream == nil {
		var err error
		if upstream, err = Dialer(cfg.Upstream); err != nil {
			return nil, err
		}
	}
	direct := proxy.NewDirect(directOptions(cfg.Upstream))
	m := map[string]*outbound{
		config.OutboundUpstream: {tcp: upstream, udp: direct},
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
		d, err := Dialer(up)
		if err != nil {
			return nil, fmt.Errorf("gateway: outbound %q: %w", o.Name, err)
		}
		m[o.Name] = &outbound{tcp: d, udp: proxy.NewDirect(directOptions(up)), timeout: o.ConnectTimeout}
	}
	return m, nil
}

// router chooses each flow's outbound by route.rules.
func router(set *rule.Set, obs map[string]*outbound, log *slog.Logger) proxy.Router {
	return func(id stack.FlowID, network string) proxy.Route {
		f := rule.Flow{Network: rule.NetworkTCP, Src: id.Src, Dst: id.Dst}
		if network == "udp" {
			f.Network = rule.NetworkUDP
		}
		res := set.Match(&f)
		ob := obs[res.Outbound] // Compile checked every name
		rt := proxy.Route{Outbound: res.Outbound, Rule: res.Rule, Action: ob.action, Dialer: ob.tcp, ConnectTimeout: ob.timeout}
		if network == "udp" {
			rt.Dialer = ob.udp
		}
		log.Debug("flow routed", "flow", id, "network", network, "rule", res.Rule, "outbound", res.Outbound)
		return rt
	}
}
