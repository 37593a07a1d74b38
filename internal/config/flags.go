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
		"tun-address":      "tun.addresses",
		"route":            "tun.routes",
		"upstream":         "upstream.kind",
		"upstream-address": "upstream.address",
		"fwmark":           "upstream.fwmark",
		"bind-interface":   "upstream.bind_interface",
		"connect-timeout":  "upstream.connect_timeout",
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
	fs.StringSlice("tun-address", prefixStrings(d.TUN.Addresses), "address/prefix-length of the TUN; repeat or comma-separate (tun.addresses)")
	fs.StringSlice("route", prefixStrings(d.TUN.Routes), "prefix to route into the TUN; repeat or comma-separate (tun.routes)")
	fs.String("upstream", d.Upstream.Kind, "how flows leave the gateway: direct, socks5 or http (upstream.kind)")
	fs.String("upstream-address", d.Upstream.Address, "host:port of the socks5 or http proxy (upstream.address)")
	fs.Uint32("fwmark", d.Upstream.Fwmark, "SO_MARK for upstream sockets, 0 for none (upstream.fwmark)")
	fs.String("bind-interface", d.Upstream.BindInterface, "bind upstream sockets to this interface (upstream.bind_interface)")
	fs.Duration("connect-timeout", d.Upstream.ConnectTimeout, "timeout for connecting upstream (upstream.connect_timeout)")
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
