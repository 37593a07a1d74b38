// Package config is the gateway's typed configuration: one struct with
// defaults, a Validate method that reports every problem with its key path,
// and a loader that layers a YAML file, TUNGATE_* environment variables and
// command-line flags over the defaults (flag > env > file > default).
//
// Only this package and cmd/gateway know about viper, cobra and pflag; the
// rest of the gateway receives a plain *Config.
package config

import (
	"net/netip"
	"time"
)

// Stack kinds (stack.kind).
const (
	StackGVisor = "gvisor"
	StackCustom = "custom"
)

// Upstream kinds (upstream.kind).
const (
	UpstreamDirect = "direct"
	UpstreamSOCKS5 = "socks5"
	UpstreamHTTP   = "http"
)

// Congestion control algorithms of the gVisor stack (stack.gvisor.congestion_control).
const (
	CongestionCubic = "cubic"
	CongestionReno  = "reno"
)

// Log formats (log.format).
const (
	LogText = "text"
	LogJSON = "json"
)

// Config is the whole gateway configuration. The mapstructure tags are the
// key names used in the YAML file; the environment variable of a key is
// TUNGATE_ followed by its path upper-cased with "." replaced by "_"
// (tun.mtu → TUNGATE_TUN_MTU).
type Config struct {
	TUN      TUN      `mapstructure:"tun"`
	Stack    Stack    `mapstructure:"stack"`
	Upstream Upstream `mapstructure:"upstream"`
	Proxy    Proxy    `mapstructure:"proxy"`
	Log      Log      `mapstructure:"log"`
}

// TUN describes the TUN device the gateway creates.
type TUN struct {
	// Name is the interface name (at most 15 bytes, the kernel's IFNAMSIZ-1).
	Name string `mapstructure:"name"`
	// MTU of the device; 1280 or more when an IPv6 address is configured.
	MTU int `mapstructure:"mtu"`
	// Addresses are assigned to the device, each an address with its prefix
	// length (198.18.0.1/15), so host bits are meaningful here.
	Addresses []netip.Prefix `mapstructure:"addresses"`
	// Routes are sent into the device. Empty by default: the gateway never
	// takes over the host's default route unless told to.
	Routes []netip.Prefix `mapstructure:"routes"`
}

// Stack selects and tunes the userspace TCP/IP stack.
type Stack struct {
	// Kind is StackGVisor or StackCustom.
	Kind   string `mapstructure:"kind"`
	GVisor GVisor `mapstructure:"gvisor"`
}

// GVisor holds the tunables of the gVisor netstack.
type GVisor struct {
	SACK                  bool   `mapstructure:"sack"`
	ReceiveBufferSize     int    `mapstructure:"receive_buffer_size"`
	SendBufferSize        int    `mapstructure:"send_buffer_size"`
	ModerateReceiveBuffer bool   `mapstructure:"moderate_receive_buffer"`
	CongestionControl     string `mapstructure:"congestion_control"`
	// MaxInFlightSYN bounds the connections whose SYN has arrived but whose
	// upstream dial has not finished yet.
	MaxInFlightSYN int `mapstructure:"max_inflight_syn"`
}

// Upstream says how flows leave the gateway.
type Upstream struct {
	// Kind is UpstreamDirect, UpstreamSOCKS5 or UpstreamHTTP.
	Kind string `mapstructure:"kind"`
	// Address is the proxy's host:port; required for socks5 and http and
	// empty for direct.
	Address  string `mapstructure:"address"`
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// Fwmark is set as SO_MARK on every upstream socket; 0 means none.
	Fwmark uint32 `mapstructure:"fwmark"`
	// BindInterface binds every upstream socket to this interface
	// (SO_BINDTODEVICE); empty means none.
	BindInterface  string        `mapstructure:"bind_interface"`
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
}

// Proxy holds the relay's timeouts.
type Proxy struct {
	// IdleTimeout closes a TCP relay with no traffic in either direction.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// HalfCloseTimeout applies once one side of a TCP relay has sent FIN:
	// if the direction still open then carries nothing for this long, both
	// sides are aborted. Data still flowing keeps a half-closed relay alive.
	HalfCloseTimeout time.Duration `mapstructure:"half_close_timeout"`
	// UDPIdleTimeout forgets a UDP session with no traffic.
	UDPIdleTimeout time.Duration `mapstructure:"udp_idle_timeout"`
}

// Log configures the gateway's structured log.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is LogText or LogJSON.
	Format string `mapstructure:"format"`
}

// Default returns the built-in configuration. It is valid, and it never
// routes the host's default route into the TUN. Each call returns a fresh
// value the caller may modify.
func Default() *Config {
	return &Config{
		TUN: TUN{
			Name: "tungate0",
			MTU:  1500,
			Addresses: []netip.Prefix{
				netip.MustParsePrefix("198.18.0.1/15"),
				netip.MustParsePrefix("2001:2::1/64"),
			},
			Routes: []netip.Prefix{},
		},
		Stack: Stack{
			Kind: StackGVisor,
			GVisor: GVisor{
				SACK:                  true,
				ReceiveBufferSize:     4 << 20,
				SendBufferSize:        4 << 20,
				ModerateReceiveBuffer: true,
				CongestionControl:     CongestionCubic,
				MaxInFlightSYN:        1024,
			},
		},
		Upstream: Upstream{
			Kind:           UpstreamDirect,
			ConnectTimeout: 10 * time.Second,
		},
		Proxy: Proxy{
			IdleTimeout:      5 * time.Minute,
			HalfCloseTimeout: 60 * time.Second,
			UDPIdleTimeout:   60 * time.Second,
		},
		Log: Log{
			Level:  "info",
			Format: LogText,
		},
	}
}
