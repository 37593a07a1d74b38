package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/tun/autoroute"
)

// resolveTimeout bounds the lookup of a proxy's host name before the
// capture is installed.
const resolveTimeout = 5 * time.Second

// AutoRoutePlan is the plan tun.auto_route installs for cfg. upstreams are
// the addresses of the upstream proxy (see UpstreamAddrs).
func AutoRoutePlan(cfg *config.Config, upstreams []netip.Addr) (*autoroute.Plan, error) {
	p, err := autoroute.NewPlan(autoroute.Config{
		TUN:            cfg.TUN.Name,
		TUNAddresses:   cfg.TUN.Addresses,
		Table:          cfg.TUN.RouteTable,
		Priority:       cfg.TUN.RulePriority,
		Mark:           cfg.SocketMark(),
		Include:        cfg.TUN.RouteInclude,
		Exclude:        cfg.TUN.RouteExclude,
		ExcludePrivate: cfg.TUN.ExcludePrivate,
		IncludeUID:     config.UIDRanges(cfg.TUN.IncludeUID),
		ExcludeUID:     config.UIDRanges(cfg.TUN.ExcludeUID),
		Strict:         cfg.TUN.StrictRoute,
		Upstreams:      upstreams,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: auto-route: %w", err)
	}
	return p, nil
}

// UpstreamAddrs are the addresses of the configured upstream proxy: its IP
// literal, or what its host name resolves to now, before anything is
// captured, looked up with the upstream sockets' mark. A direct upstream
// has none. A name that does not resolve is
// not an error here (the gateway's marked sockets skip the capture anyway);
// the returned error says so for the log.
func UpstreamAddrs(ctx context.Context, up config.Upstream) ([]netip.Addr, error) {
	if up.Kind == config.UpstreamDirect || up.Address == "" {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(up.Address)
	if err != nil {
		return nil, fmt.Errorf("upstream.address %q: %w", up.Address, err)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := directOptions(up).SystemResolver().LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve upstream.address %q: %w", host, err)
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}

// ProxyAddrs are the addresses of every proxy cfg names: the upstream
// block's and the outbounds'. Lookups that fail are reported to warn.
func ProxyAddrs(ctx context.Context, cfg *config.Config, warn func(error)) []netip.Addr {
	ups := []config.Upstream{cfg.Upstream}
	for _, o := range cfg.Outbounds {
		ups = append(ups, o.Upstream(cfg.Upstream.ConnectTimeout))
	}
	var out []netip.Addr
	for _, up := range ups {
		addrs, err := UpstreamAddrs(ctx, up)
		if err != nil {
			warn(err)
		}
		out = append(out, addrs...)
	}
	return out
}

// startAutoRoute installs the capture into the TUN with index tunIndex.
// Conflicts with the host's rules and tables are configuration errors
// naming the key.
func startAutoRoute(ctx context.Context, cfg *config.Config, tunIndex int, log *slog.Logger) (*autoroute.Session, error) {
	ups := ProxyAddrs(ctx, cfg, func(err error) {
		log.Warn("auto-route: an upstream proxy's address is not excluded explicitly (the gateway's marked sockets still skip the capture)", "err", err)
	})
	p, err := AutoRoutePlan(cfg, ups)
	if err != nil {
		return nil, err
	}
	s, err := autoroute.Start(p, tunIndex, cfg.SocketMark(), log)
	if err != nil {
		return nil, autoRouteError(cfg, err)
	}
	return s, nil
}

// autoRouteError turns a conflict with the host's state into a
// configuration error naming the key to change.
func autoRouteError(cfg *config.Config, err error) error {
	var ce *autoroute.ConflictError
	switch {
	case errors.As(err, &ce):
		key := map[autoroute.Field]string{
			autoroute.FieldTable:    "tun.route_table",
			autoroute.FieldPriority: "tun.rule_priority",
			autoroute.FieldMark:     cfg.MarkKey(),
		}[ce.Field]
		return &config.Error{Problems: []config.Problem{{Key: key, Message: ce.Msg + "; choose another, nothing was installed"}}}
	case errors.Is(err, autoroute.ErrBusy):
		return &config.Error{Problems: []config.Problem{{Key: "tun.route_table", Message: strings.TrimPrefix(err.Error(), "autoroute: ") + "; give this gateway another tun.route_table and tun.rule_priority"}}}
	}
	return fmt.Errorf("gateway: auto-route: %w", err)
}
