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
	"strconv"
	"time"
)

// Stack kinds (stack.kind).
const (
	StackGVisor = "gvisor"
	StackCustom = "custom"
)

// Offload modes (tun.offload).
const (
	// OffloadAuto moves TCP superpackets whole between the TUN and the
	// own engine when the kernel allows it.
	OffloadAuto = "auto"
	// OffloadOff splits superpackets into segments on read and coalesces
	// segments again on write, in user space.
	OffloadOff = "off"
)

// QueuesAuto (tun.queues) opens one TUN queue per CPU, up to MaxQueues.
const QueuesAuto = "auto"

// MaxQueues is the most TUN queues tun.queues may ask for.
const MaxQueues = 64

// QueueCount is the number of TUN queues tun.queues asks for on a machine
// of cpus CPUs: auto is one per CPU, at most 8; 0 when the value is
// invalid (validation reports it).
func (t *TUN) QueueCount(cpus int) int {
	if t.Queues == QueuesAuto {
		return max(1, min(cpus, 8))
	}
	n, err := strconv.Atoi(t.Queues)
	if err != nil || n < 1 || n > MaxQueues {
		return 0
	}
	return n
}

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
	// CongestionNewReno is the own engine's name for RFC 5681/6582 Reno.
	CongestionNewReno = "newreno"
)

// Defaults of auto_route (tun.route_table, tun.rule_priority,
// tun.route_mark): 0x7467 is "tg". They stay clear of what other tun
// proxies install by default (table 2022 and priorities from 9000, as
// sing-box and mihomo use), so that both can run on one machine to be
// compared.
const (
	DefaultRouteTable   = 7467
	DefaultRulePriority = 7400
	DefaultRouteMark    = 0x7467
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
	// Outbounds are named upstreams besides the built-ins (upstream,
	// direct, reject, drop) for route.rules to choose from.
	Outbounds []Outbound `mapstructure:"outbounds"`
	Route     Route      `mapstructure:"route"`
	DNS       DNS        `mapstructure:"dns"`
	Proxy     Proxy      `mapstructure:"proxy"`
	UDP       UDP        `mapstructure:"udp"`
	API       API        `mapstructure:"api"`
	Log       Log        `mapstructure:"log"`
}

// UDP NAT behaviours (udp.nat).
const (
	// NATFullCone is endpoint-independent mapping and filtering (RFC
	// 4787): one upstream socket per app socket for every destination,
	// and datagrams from any remote reach the app.
	NATFullCone = "full-cone"
	// NATSymmetric is one upstream socket per flow (app socket and
	// destination), which hears only that destination.
	NATSymmetric = "symmetric"
)

// UDP configures UDP sessions.
type UDP struct {
	// NAT is NATFullCone or NATSymmetric.
	NAT string `mapstructure:"nat"`
	// MaxSessions bounds the UDP sessions open; past it the least
	// recently used is ended. 0 derives it from the open-file limit (see
	// MaxSessionsFor).
	MaxSessions int `mapstructure:"max_sessions"`
}

// MaxSessionsFor is udp.max_sessions's value under an open-file limit of
// nofile: the key when set, else a sixteenth of nofile (each session holds
// one or two sockets, and TCP flows need the rest), between 64 and 4096.
func (u UDP) MaxSessionsFor(nofile uint64) int {
	if u.MaxSessions > 0 {
		return u.MaxSessions
	}
	return int(min(max(nofile/16, 64), 4096))
}

// TUN describes the TUN device the gateway creates.
type TUN struct {
	// Name is the interface name (at most 15 bytes, the kernel's IFNAMSIZ-1).
	Name string `mapstructure:"name"`
	// MTU of the device; 1280 or more when an IPv6 address is configured.
	MTU int `mapstructure:"mtu"`
	// Offload is OffloadAuto or OffloadOff.
	Offload string `mapstructure:"offload"`
	// Queues is QueuesAuto or a count of TUN queues (1–64); see
	// TUN.QueueCount.
	Queues string `mapstructure:"queues"`
	// Addresses are assigned to the device, each an address with its prefix
	// length (198.18.0.1/15), so host bits are meaningful here.
	Addresses []netip.Prefix `mapstructure:"addresses"`
	// Routes are sent into the device. Empty by default: the gateway never
	// takes over the host's default route unless told to.
	Routes []netip.Prefix `mapstructure:"routes"`

	// AutoRoute captures the machine's traffic into the TUN with policy
	// routing (tun/autoroute): routes in RouteTable, rules at RulePriority
	// … +9, all removed again on exit. The main table is not changed.
	AutoRoute    bool `mapstructure:"auto_route"`
	RouteTable   int  `mapstructure:"route_table"`
	RulePriority int  `mapstructure:"rule_priority"`
	// RouteMark is the SO_MARK of the gateway's own sockets under
	// auto_route when upstream.fwmark is 0; marked sockets skip the
	// capture, so the gateway never captures itself.
	RouteMark uint32 `mapstructure:"route_mark"`
	// RouteInclude are the captured prefixes; RouteExclude, and with
	// ExcludePrivate the private and link-local ranges, stay on the
	// host's other routes.
	RouteInclude   []netip.Prefix `mapstructure:"route_include"`
	RouteExclude   []netip.Prefix `mapstructure:"route_exclude"`
	ExcludePrivate bool           `mapstructure:"exclude_private"`
	// IncludeUID limits the capture to these users' sockets; ExcludeUID
	// exempts users. Each item is a uid ("1000") or a range ("1000-1999").
	IncludeUID []string `mapstructure:"include_uid"`
	ExcludeUID []string `mapstructure:"exclude_uid"`
	// StrictRoute sends DNS to any server into the TUN and makes captured
	// traffic fail instead of leaking when the TUN is gone.
	StrictRoute bool `mapstructure:"strict_route"`
}

// Stack selects and tunes the userspace TCP/IP stack.
type Stack struct {
	// Kind is StackGVisor or StackCustom.
	Kind   string `mapstructure:"kind"`
	Custom Custom `mapstructure:"custom"`
	GVisor GVisor `mapstructure:"gvisor"`
}

// Custom holds the tunables of tungate's own TCP engine (stack/tcp).
type Custom struct {
	// SACK, Timestamps and WindowScale enable RFC 2018 selective
	// acknowledgements and the RFC 7323 options; each is used only when
	// the app offers it too.
	SACK        bool `mapstructure:"sack"`
	Timestamps  bool `mapstructure:"timestamps"`
	WindowScale bool `mapstructure:"window_scale"`
	// NoDelay turns Nagle's algorithm off: the relay already writes what
	// the upstream sent in large chunks, and a proxy must not add delay
	// to small request/response exchanges.
	NoDelay bool `mapstructure:"no_delay"`
	// TailLossProbe sends RFC 8985's tail loss probe after about two
	// round trips without ACKs instead of waiting for the RTO (SACK only).
	TailLossProbe bool `mapstructure:"tail_loss_probe"`
	// ReceiveBufferSize is each connection's initial receive buffer; it is
	// auto-tuned up to ReceiveBufferMax while the reader keeps up.
	ReceiveBufferSize int `mapstructure:"receive_buffer_size"`
	ReceiveBufferMax  int `mapstructure:"receive_buffer_max"`
	SendBufferSize    int `mapstructure:"send_buffer_size"`
	// BufferIdle releases a connection's empty buffers after this long
	// without data, so idle connections cost little memory.
	BufferIdle time.Duration `mapstructure:"buffer_idle"`
	// CongestionControl is cubic (RFC 9438) or newreno (RFC 5681/6582).
	CongestionControl string `mapstructure:"congestion_control"`
	// DelayedAck is the delayed-ACK timer (RFC 9293 §3.8.6.3: < 500 ms).
	DelayedAck time.Duration `mapstructure:"delayed_ack"`
	// TimeWait is how long a connection we closed first stays in
	// TIME-WAIT (2·MSL).
	TimeWait time.Duration `mapstructure:"time_wait"`
	// MaxTimeWait bounds connections in TIME-WAIT; past it, connections
	// skip TIME-WAIT (counted as TimeWaitOverflows).
	MaxTimeWait int `mapstructure:"max_time_wait"`
	// FinWait2Timeout bounds FIN-WAIT-2 after the relay closed both ways.
	FinWait2Timeout time.Duration `mapstructure:"fin_wait2_timeout"`
	// SynAckRetries is how often an unanswered SYN-ACK is sent again.
	SynAckRetries int `mapstructure:"synack_retries"`
	// KeepaliveIdle enables keepalive probes after this much silence;
	// 0 disables them.
	KeepaliveIdle     time.Duration `mapstructure:"keepalive_idle"`
	KeepaliveInterval time.Duration `mapstructure:"keepalive_interval"`
	KeepaliveCount    int           `mapstructure:"keepalive_count"`
	// SynBacklog bounds half-open connections (SYN-ACK sent, waiting for
	// the third ACK); PendingBacklog bounds SYNs waiting for their
	// upstream dial. Beyond either, SYN cookies answer (RFC 4987).
	SynBacklog     int `mapstructure:"syn_backlog"`
	PendingBacklog int `mapstructure:"pending_backlog"`
	// ChallengeAckLimit bounds the RFC 5961 challenge ACKs one connection
	// sends per second, ChallengeAckGlobalLimit those of all connections
	// together (§7); 0 means no limit.
	ChallengeAckLimit       int `mapstructure:"challenge_ack_limit"`
	ChallengeAckGlobalLimit int `mapstructure:"challenge_ack_global_limit"`
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
	// UDP carries UDP flows through a socks5 proxy with UDP ASSOCIATE.
	// Without it, UDP flows routed to a socks5 or http upstream are
	// refused (ICMP port unreachable); direct always carries UDP.
	UDP bool `mapstructure:"udp"`
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
	// MaxConnections bounds the TCP flows in progress; past it new SYNs
	// get a RST. 0 derives it from the open-file limit (see
	// MaxConnectionsFor); -1 means no limit.
	MaxConnections int `mapstructure:"max_connections"`
}

// fdReserve is what MaxConnectionsFor keeps back from the open-file limit
// for everything that is not an upstream socket: the TUN, DNS and UDP
// sockets, the DNS cache, logs, the Go runtime.
func fdReserve(nofile uint64) uint64 { return max(64, nofile/20) }

// MaxConnectionsFor is proxy.max_connections's value under an open-file
// limit of nofile: the key itself when set, else nofile minus a reserve
// (5%, at least 64), since every TCP flow holds one upstream socket. It
// returns 0 (no limit) for -1.
func (p Proxy) MaxConnectionsFor(nofile uint64) int {
	switch {
	case p.MaxConnections > 0:
		return p.MaxConnections
	case p.MaxConnections < 0:
		return 0
	}
	if r := fdReserve(nofile); nofile > r {
		return int(min(nofile-r, 1<<30))
	}
	return 1
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
			Routes:  []netip.Prefix{},
			Offload: OffloadAuto,
			Queues:  QueuesAuto,

			AutoRoute:    false,
			RouteTable:   DefaultRouteTable,
			RulePriority: DefaultRulePriority,
			RouteMark:    DefaultRouteMark,
			RouteInclude: []netip.Prefix{
				netip.MustParsePrefix("0.0.0.0/0"),
				netip.MustParsePrefix("::/0"),
			},
			RouteExclude:   []netip.Prefix{},
			ExcludePrivate: true,
			IncludeUID:     []string{},
			ExcludeUID:     []string{},
			StrictRoute:    false,
		},
		Stack: Stack{
			Kind: StackCustom,
			Custom: Custom{
				SACK:              true,
				Timestamps:        true,
				WindowScale:       true,
				NoDelay:           true,
				TailLossProbe:     true,
				ReceiveBufferSize: 256 << 10,
				ReceiveBufferMax:  4 << 20,
				SendBufferSize:    1 << 20,
				BufferIdle:        time.Second,
				CongestionControl: CongestionCubic,
				DelayedAck:        40 * time.Millisecond,
				TimeWait:          60 * time.Second,
				MaxTimeWait:       65536,
				FinWait2Timeout:   60 * time.Second,
				SynAckRetries:     5,
				KeepaliveIdle:     0,
				KeepaliveInterval: 75 * time.Second,
				KeepaliveCount:    9,
				SynBacklog:        1024,
				PendingBacklog:    1024,

				ChallengeAckLimit:       10,
				ChallengeAckGlobalLimit: 1000,
			},
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
		Outbounds: []Outbound{},
		Route: Route{
			Rules: []Rule{},
			Final: OutboundUpstream,
		},
		DNS: DNS{
			Hijack:        false,
			Mode:          DNSFakeIP,
			FakeIPRange:   DefaultFakeIPRange,
			FakeIP6Range:  DefaultFakeIP6Range,
			Servers:       []string{},
			CacheFile:     DefaultDNSCacheFile,
			DomainExclude: []string{},
		},
		Proxy: Proxy{
			IdleTimeout:      5 * time.Minute,
			HalfCloseTimeout: 60 * time.Second,
			UDPIdleTimeout:   5 * time.Minute,
		},
		UDP: UDP{NAT: NATFullCone},
		API: API{TraceBuffer: DefaultTraceBuffer},
		Log: Log{
			Level:  "info",
			Format: LogText,
		},
	}
}
