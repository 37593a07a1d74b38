package config

import (
	"github.com/spf13/pflag"
)

// flagKeys maps each flag RegisterFlags defines to its config key.
func flagKeys() map[string]string {
	return map[string]string{
		"stack":            "stack.kind",
		"tun-name":         "tun.name",
		"mtu":              "tun.mtu",
		"offload":          "tun.offload",
		"queues":           "tun.queues",
		"tun-address":      "tun.addresses",
		"route":            "tun.routes",
		"auto-route":       "tun.auto_route",
		"strict-route":     "tun.strict_route",
		"route-include":    "tun.route_include",
		"route-exclude":    "tun.route_exclude",
		"include-uid":      "tun.include_uid",
		"exclude-uid":      "tun.exclude_uid",
		"upstream":         "upstream.kind",
		"upstream-address": "upstream.address",
		"fwmark":           "upstream.fwmark",
		"bind-interface":   "upstream.bind_interface",
		"connect-timeout":  "upstream.connect_timeout",
		"upstream-udp":     "upstream.udp",
		"udp-nat":          "udp.nat",
		"api-listen":       "api.listen",
		"log-level":        "log.level",
		"log-format":       "log.format",
	}
}

// RegisterFlags adds the flags that override config keys to fs. Their
// defaults are the built-in ones, shown in help only: Load uses a flag's
// value only when the user set it, so a file or environment value is not
// overridden by an untouched flag. Pass the same set to Load in
// LoadOptions.Flags after parsing.
func RegisterFlags(fs *pflag.FlagSet) {
	d := Default()
	fs.String("stack", d.Stack.Kind, "userspace TCP/IP stack: gvisor or custom (stack.kind)")
	fs.String("tun-name", d.TUN.Name, "name of the TUN interface (tun.name)")
	fs.Int("mtu", d.TUN.MTU, "MTU of the TUN interface (tun.mtu)")
	fs.String("offload", d.TUN.Offload, "TCP superpackets between the TUN and the own engine: auto or off (tun.offload)")
	fs.String("queues", d.TUN.Queues, "TUN queues, each read on its own core by its own engine shard: auto (one per CPU, at most 8) or a count (tun.queues)")
	fs.StringSlice("tun-address", prefixStrings(d.TUN.Addresses), "address/prefix-length of the TUN; repeat or comma-separate (tun.addresses)")
	fs.StringSlice("route", prefixStrings(d.TUN.Routes), "prefix to route into the TUN; repeat or comma-separate (tun.routes)")
	fs.Bool("auto-route", d.TUN.AutoRoute, "capture all traffic into the TUN with policy routing, removed again on exit (tun.auto_route)")
	fs.Bool("strict-route", d.TUN.StrictRoute, "with --auto-route: DNS to any server goes into the TUN, and captured traffic fails rather than leaks when the TUN is gone (tun.strict_route)")
	fs.StringSlice("route-include", prefixStrings(d.TUN.RouteInclude), "with --auto-route: prefixes to capture (tun.route_include)")
	fs.StringSlice("route-exclude", prefixStrings(d.TUN.RouteExclude), "with --auto-route: prefixes never captured (tun.route_exclude)")
	fs.StringSlice("include-uid", d.TUN.IncludeUID, "with --auto-route: capture only these users' sockets, uid or uid-uid (tun.include_uid)")
	fs.StringSlice("exclude-uid", d.TUN.ExcludeUID, "with --auto-route: never capture these users' sockets, uid or uid-uid (tun.exclude_uid)")
	fs.String("upstream", d.Upstream.Kind, "how flows leave the gateway: direct, socks5 or http (upstream.kind)")
	fs.String("upstream-address", d.Upstream.Address, "host:port of the socks5 or http proxy (upstream.address)")
	fs.Uint32("fwmark", d.Upstream.Fwmark, "SO_MARK for upstream sockets, 0 for none (upstream.fwmark)")
	fs.String("bind-interface", d.Upstream.BindInterface, "bind upstream sockets to this interface (upstream.bind_interface)")
	fs.Duration("connect-timeout", d.Upstream.ConnectTimeout, "timeout for connecting upstream (upstream.connect_timeout)")
	fs.Bool("upstream-udp", d.Upstream.UDP, "carry UDP through the socks5 upstream with UDP ASSOCIATE (upstream.udp)")
	fs.String("udp-nat", d.UDP.NAT, "UDP mapping: full-cone (one upstream socket per app socket, any remote may answer) or symmetric (one per destination) (udp.nat)")
	fs.String("api-listen", d.API.Listen, "serve the HTTP API (metrics, connections, web view, reload) on host:port or a unix socket path (api.listen)")
	fs.String("log-level", d.Log.Level, "log level: debug, info, warn or error (log.level)")
	fs.String("log-format", d.Log.Format, "log format: text or json (log.format)")
}

func prefixStrings[P interface{ String() string }](ps []P) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
