package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func autoRoute(c *Config) { c.TUN.AutoRoute = true }

func hijack(c *Config) {
	c.DNS.Hijack = true
	c.DNS.Servers = []string{"198.19.0.2:53"}
}

func socks5(c *Config) {
	c.Upstream.Kind = UpstreamSOCKS5
	c.Upstream.Address = "127.0.0.1:1080"
}

// problemsOf validates c and returns its problems, failing the test if
// Validate's error is not an *Error.
func problemsOf(t *testing.T, c *Config) []Problem {
	t.Helper()
	err := c.Validate()
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Validate() error %T is not *Error: %v", err, err)
	}
	return e.Problems
}

func TestValidate_RejectsEachInvalidSetting(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		key     string
		message string // substring of the problem's message
	}{
		{"mtu too large", func(c *Config) { c.TUN.MTU = 70000 }, "tun.mtu", "70000 is out of range [576, 65535]"},
		{"mtu too small", func(c *Config) { c.TUN.MTU = 500 }, "tun.mtu", "out of range"},
		{"mtu below IPv6 minimum", func(c *Config) { c.TUN.MTU = 1000 }, "tun.mtu", "below 1280"},
		{"empty tun name", func(c *Config) { c.TUN.Name = "" }, "tun.name", "must not be empty"},
		{"long tun name", func(c *Config) { c.TUN.Name = "abcdefghijklmnop" }, "tun.name", "longer than the kernel limit of 15"},
		{"tun name with slash", func(c *Config) { c.TUN.Name = "tun/0" }, "tun.name", "contains '/'"},
		{"tun name with space", func(c *Config) { c.TUN.Name = "tun 0" }, "tun.name", "white space"},
		{"no addresses", func(c *Config) { c.TUN.Addresses = nil }, "tun.addresses", "at least one"},
		{"api on every address without secret", func(c *Config) { c.API.Listen = ":9090" }, "api.secret", "is required"},
		{"api on a routable address without secret", func(c *Config) { c.API.Listen = "198.19.0.1:9090" }, "api.secret", "is required"},
		{"api listen without port", func(c *Config) { c.API.Listen = "127.0.0.1" }, "api.listen", "want host:port"},
		{"api listen with bad port", func(c *Config) { c.API.Listen = "127.0.0.1:99999" }, "api.listen", "not a number"},
		{"negative trace buffer", func(c *Config) { c.API.TraceBuffer = -1 }, "api.trace_buffer", "want 0–65536"},
		{"unspecified address", func(c *Config) { c.TUN.Addresses = prefixes("0.0.0.0/8") }, "tun.addresses[0]", "cannot be an interface address"},
		{"multicast address", func(c *Config) { c.TUN.Addresses = prefixes("198.18.0.1/15", "ff02::1/64") }, "tun.addresses[1]", "cannot be an interface address"},
		{"mapped address", func(c *Config) { c.TUN.Addresses = prefixes("::ffff:198.18.0.1/120") }, "tun.addresses[0]", "IPv4-mapped"},
		{"duplicate address", func(c *Config) { c.TUN.Addresses = prefixes("198.18.0.1/15", "198.18.0.1/24") }, "tun.addresses[1]", "duplicates tun.addresses[0]"},
		{"zero prefix", func(c *Config) { c.TUN.Addresses = []netip.Prefix{{}} }, "tun.addresses[0]", "not a valid"},
		{"route with host bits", func(c *Config) { c.TUN.Routes = prefixes("198.19.0.1/24") }, "tun.routes[0]", "did you mean 198.19.0.0/24?"},
		{"duplicate route", func(c *Config) { c.TUN.Routes = prefixes("198.19.0.0/24", "198.19.0.0/24") }, "tun.routes[1]", "duplicates tun.routes[0]"},
		{"main route table", func(c *Config) { autoRoute(c); c.TUN.RouteTable = 254 }, "tun.route_table", "reserved"},
		{"zero route table", func(c *Config) { autoRoute(c); c.TUN.RouteTable = 0 }, "tun.route_table", "out of range"},
		{"rule priority past main", func(c *Config) { autoRoute(c); c.TUN.RulePriority = 32760 }, "tun.rule_priority", "out of range [1, 32756]"},
		{"zero rule priority", func(c *Config) { c.TUN.RulePriority = 0 }, "tun.rule_priority", "out of range"},
		{"no mark under auto_route", func(c *Config) { autoRoute(c); c.TUN.RouteMark = 0 }, "tun.route_mark", "need a mark"},
		{"empty include", func(c *Config) { autoRoute(c); c.TUN.RouteInclude = nil }, "tun.route_include", "capture nothing"},
		{"include with host bits", func(c *Config) { autoRoute(c); c.TUN.RouteInclude = prefixes("198.19.0.1/24") }, "tun.route_include[0]", "did you mean 198.19.0.0/24?"},
		{"exclude with host bits", func(c *Config) { autoRoute(c); c.TUN.RouteExclude = prefixes("198.19.0.1/24") }, "tun.route_exclude[0]", "did you mean"},
		{"duplicate exclude", func(c *Config) { autoRoute(c); c.TUN.RouteExclude = prefixes("198.19.0.0/24", "198.19.0.0/24") }, "tun.route_exclude[1]", "duplicates tun.route_exclude[0]"},
		{"include inside exclude", func(c *Config) {
			autoRoute(c)
			c.TUN.RouteInclude = prefixes("198.19.0.0/24")
			c.TUN.RouteExclude = prefixes("198.18.0.0/15")
		}, "tun.route_include[0]", "lies inside 198.18.0.0/15, excluded by tun.route_exclude[0]"},
		{"include equals exclude", func(c *Config) {
			autoRoute(c)
			c.TUN.RouteInclude = prefixes("::/0")
			c.TUN.RouteExclude = prefixes("::/0")
		}, "tun.route_include[0]", "capture nothing"},
		{"include inside private", func(c *Config) { autoRoute(c); c.TUN.RouteInclude = prefixes("10.1.0.0/16") }, "tun.route_include[0]", "tun.exclude_private: false"},
		{"include a family the TUN has no address of", func(c *Config) { autoRoute(c); c.TUN.Addresses = prefixes("198.18.0.1/15") }, "tun.route_include[1]", "no IPv6 address"},
		{"outbound mark under auto_route", func(c *Config) {
			autoRoute(c)
			c.Outbounds = []Outbound{{Name: "x", Kind: UpstreamDirect, Fwmark: 7}}
		}, "outbounds[0].fwmark", "would loop into the TUN"},
		{"dns hijack without servers", func(c *Config) { c.DNS.Hijack = true }, "dns.servers", "is required"},
		{"dns server by name", func(c *Config) { hijack(c); c.DNS.Servers = []string{"dns.test:53"} }, "dns.servers[0]", "must be an IP address"},
		{"dns server without port", func(c *Config) { hijack(c); c.DNS.Servers = []string{"198.19.0.2"} }, "dns.servers[0]", "not host:port"},
		{"dns server a fake address", func(c *Config) { hijack(c); c.DNS.Servers = []string{"198.18.200.1:53"} }, "dns.servers[0]", "loop"},
		{"dns server the tun", func(c *Config) { hijack(c); c.DNS.Servers = []string{"198.18.0.1:53"} }, "dns.servers[0]", "TUN's own address"},
		{"dns mode", func(c *Config) { c.DNS.Mode = "redir" }, "dns.mode", "not one of fake-ip, forward"},
		{"fake range v6 in v4 key", func(c *Config) { c.DNS.FakeIPRange = netip.MustParsePrefix("2001:2::/64") }, "dns.fake_ip_range", "not an IPv4 prefix"},
		{"fake range tiny", func(c *Config) { c.DNS.FakeIPRange = netip.MustParsePrefix("198.18.128.0/31") }, "dns.fake_ip_range", "too small"},
		{"fake range not routed", func(c *Config) { hijack(c); c.DNS.FakeIPRange = netip.MustParsePrefix("198.51.100.0/24") }, "dns.fake_ip_range", "never reach the gateway"},
		{"dns servers without hijack", func(c *Config) { c.DNS.Servers = []string{"198.19.0.2:53"} }, "dns.servers", "dns.hijack is false"},
		{"bad domain exclude", func(c *Config) { hijack(c); c.DNS.DomainExclude = []string{"a b"} }, "dns.domain_exclude[0]", "not a domain name"},
		{"bad uid", func(c *Config) { autoRoute(c); c.TUN.IncludeUID = []string{"alice"} }, "tun.include_uid[0]", "not a uid"},
		{"reversed uid range", func(c *Config) { autoRoute(c); c.TUN.ExcludeUID = []string{"0", "2000-1000"} }, "tun.exclude_uid[1]", "starts above its end"},
		{"uid in both", func(c *Config) {
			autoRoute(c)
			c.TUN.IncludeUID = []string{"1000-1999"}
			c.TUN.ExcludeUID = []string{"1500"}
		}, "tun.include_uid[0]", "overlaps tun.exclude_uid[0]"},
		{"strict without auto_route", func(c *Config) { c.TUN.StrictRoute = true }, "tun.strict_route", "tun.auto_route is false"},
		{"exclude without auto_route", func(c *Config) { c.TUN.RouteExclude = prefixes("198.19.0.0/24") }, "tun.route_exclude", "tun.auto_route is false"},
		{"exclude_uid without auto_route", func(c *Config) { c.TUN.ExcludeUID = []string{"0"} }, "tun.exclude_uid", "tun.auto_route is false"},
		{"unknown stack", func(c *Config) { c.Stack.Kind = "lwip" }, "stack.kind", `"lwip" is not one of gvisor, custom`},
		{"small receive buffer", func(c *Config) { c.Stack.GVisor.ReceiveBufferSize = 100 }, "stack.gvisor.receive_buffer_size", "out of range"},
		{"negative send buffer", func(c *Config) { c.Stack.GVisor.SendBufferSize = -1 }, "stack.gvisor.send_buffer_size", "out of range"},
		{"unknown congestion control", func(c *Config) { c.Stack.GVisor.CongestionControl = "bbr" }, "stack.gvisor.congestion_control", "not one of cubic, reno"},
		{"custom receive max below initial", func(c *Config) { c.Stack.Custom.ReceiveBufferMax = 1 << 10 }, "stack.custom.receive_buffer_max", "out of range"},
		{"custom congestion control", func(c *Config) { c.Stack.Custom.CongestionControl = "reno" }, "stack.custom.congestion_control", "not one of cubic, newreno"},
		{"custom delayed ack too long", func(c *Config) { c.Stack.Custom.DelayedAck = time.Second }, "stack.custom.delayed_ack", "below 500ms"},
		{"custom zero buffer idle", func(c *Config) { c.Stack.Custom.BufferIdle = 0 }, "stack.custom.buffer_idle", ""},
		{"custom zero time wait", func(c *Config) { c.Stack.Custom.TimeWait = 0 }, "stack.custom.time_wait", ""},
		{"custom zero max time wait", func(c *Config) { c.Stack.Custom.MaxTimeWait = 0 }, "stack.custom.max_time_wait", ""},
		{"custom huge max time wait", func(c *Config) { c.Stack.Custom.MaxTimeWait = 1 << 30 }, "stack.custom.max_time_wait", ""},
		{"custom negative keepalive", func(c *Config) { c.Stack.Custom.KeepaliveIdle = -time.Second }, "stack.custom.keepalive_idle", "0 disables"},
		{"custom zero syn backlog", func(c *Config) { c.Stack.Custom.SynBacklog = 0 }, "stack.custom.syn_backlog", "out of range"},
		{"zero max inflight", func(c *Config) { c.Stack.GVisor.MaxInFlightSYN = 0 }, "stack.gvisor.max_inflight_syn", "out of range"},
		{"unknown upstream", func(c *Config) { c.Upstream.Kind = "vpn" }, "upstream.kind", "not one of direct, socks5, http"},
		{"socks5 without address", func(c *Config) { c.Upstream.Kind = UpstreamSOCKS5 }, "upstream.address", "required when upstream.kind is socks5"},
		{"http without address", func(c *Config) { c.Upstream.Kind = UpstreamHTTP }, "upstream.address", "required when upstream.kind is http"},
		{"address without port", func(c *Config) { socks5(c); c.Upstream.Address = "127.0.0.1" }, "upstream.address", "not host:port"},
		{"address with empty host", func(c *Config) { socks5(c); c.Upstream.Address = ":1080" }, "upstream.address", "empty host"},
		{"address with bad port", func(c *Config) { socks5(c); c.Upstream.Address = "127.0.0.1:70000" }, "upstream.address", "not a number in [1, 65535]"},
		{"address with port zero", func(c *Config) { socks5(c); c.Upstream.Address = "127.0.0.1:0" }, "upstream.address", "not a number in [1, 65535]"},
		{"address with bad host", func(c *Config) { socks5(c); c.Upstream.Address = "a b:1080" }, "upstream.address", "neither an IP address nor a host name"},
		{"direct with address", func(c *Config) { c.Upstream.Address = "127.0.0.1:1080" }, "upstream.address", "upstream.kind is direct"},
		{"direct with username", func(c *Config) { c.Upstream.Username = "u" }, "upstream.username", "upstream.kind is direct"},
		{"password without username", func(c *Config) { socks5(c); c.Upstream.Password = "p" }, "upstream.password", "without upstream.username"},
		{"long socks5 username", func(c *Config) { socks5(c); c.Upstream.Username = strings.Repeat("u", 256) }, "upstream.username", "SOCKS5 limit of 255"},
		{"bad bind interface", func(c *Config) { c.Upstream.BindInterface = "eth:0" }, "upstream.bind_interface", "contains"},
		{"bind to own tun", func(c *Config) { c.Upstream.BindInterface = c.TUN.Name }, "upstream.bind_interface", "loop"},
		{"zero connect timeout", func(c *Config) { c.Upstream.ConnectTimeout = 0 }, "upstream.connect_timeout", "0s must be positive"},
		{"negative idle timeout", func(c *Config) { c.Proxy.IdleTimeout = -time.Second }, "proxy.idle_timeout", "-1s must be positive"},
		{"negative half-close timeout", func(c *Config) { c.Proxy.HalfCloseTimeout = -1 }, "proxy.half_close_timeout", "must be positive"},
		{"max connections below -1", func(c *Config) { c.Proxy.MaxConnections = -2 }, "proxy.max_connections", "want a positive limit"},
		{"zero udp timeout", func(c *Config) { c.Proxy.UDPIdleTimeout = 0 }, "proxy.udp_idle_timeout", "must be positive"},
		{"unknown udp nat", func(c *Config) { c.UDP.NAT = "cone" }, "udp.nat", "not one of full-cone, symmetric"},
		{"negative udp sessions", func(c *Config) { c.UDP.MaxSessions = -1 }, "udp.max_sessions", "want a positive limit"},
		{"udp through http", func(c *Config) {
			c.Upstream.Kind, c.Upstream.Address, c.Upstream.UDP = UpstreamHTTP, "198.19.0.5:3128", true
		}, "upstream.udp", "carries no UDP"},
		{"unknown log level", func(c *Config) { c.Log.Level = "verbose" }, "log.level", "not one of debug, info, warn, error"},
		{"unknown log format", func(c *Config) { c.Log.Format = "xml" }, "log.format", "not one of text, json"},
		{"direct default route", func(c *Config) { c.TUN.Routes = prefixes("0.0.0.0/0") }, "tun.routes[0]", "loop"},
		{"direct IPv6 default route", func(c *Config) { c.TUN.Routes = prefixes("::/0") }, "tun.routes[0]", "loop"},
		{"direct half of the default route", func(c *Config) { c.TUN.Routes = prefixes("198.19.0.0/24", "128.0.0.0/1") }, "tun.routes[1]", "covers the default route"},
		{"proxy inside a route", func(c *Config) { socks5(c); c.TUN.Routes = prefixes("127.0.0.0/8") }, "upstream.address", "inside tun.routes[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			ps := problemsOf(t, c)
			for _, p := range ps {
				if p.Key == tt.key && strings.Contains(p.Message, tt.message) {
					return
				}
			}
			t.Fatalf("want a problem %s: ...%s..., got %q", tt.key, tt.message, ps)
		})
	}
}

func TestValidate_AcceptsValidVariants(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"custom stack", func(c *Config) { c.Stack.Kind = StackCustom }},
		{"socks5 with credentials", func(c *Config) { socks5(c); c.Upstream.Username = "u"; c.Upstream.Password = "p" }},
		{"http with host name", func(c *Config) { c.Upstream.Kind = UpstreamHTTP; c.Upstream.Address = "proxy.internal:3128" }},
		{"http with IPv6 literal", func(c *Config) { c.Upstream.Kind = UpstreamHTTP; c.Upstream.Address = "[::1]:3128" }},
		{"default route with fwmark", func(c *Config) { c.TUN.Routes = prefixes("0.0.0.0/0", "::/0"); c.Upstream.Fwmark = 1 }},
		{"default route with bind interface", func(c *Config) {
			c.TUN.Routes = prefixes("0.0.0.0/1", "128.0.0.0/1")
			c.Upstream.BindInterface = "veth0"
		}},
		{"direct with a narrow route", func(c *Config) { c.TUN.Routes = prefixes("198.19.0.0/24") }},
		{"proxy outside the routes", func(c *Config) { socks5(c); c.TUN.Routes = prefixes("198.19.0.0/24") }},
		{"IPv4 only with small MTU", func(c *Config) { c.TUN.Addresses = prefixes("198.18.0.1/15"); c.TUN.MTU = 576 }},
		{"max fwmark", func(c *Config) { c.Upstream.Fwmark = 1<<32 - 1 }},
		{"debug json log", func(c *Config) { c.Log = Log{Level: "debug", Format: LogJSON} }},
		{"api on loopback without secret", func(c *Config) { c.API.Listen = "127.0.0.1:9090" }},
		{"api on localhost without secret", func(c *Config) { c.API.Listen = "localhost:9090" }},
		{"api on IPv6 loopback without secret", func(c *Config) { c.API.Listen = "[::1]:9090" }},
		{"api on a unix socket without secret", func(c *Config) { c.API.Listen = "/run/tungate/api.sock" }},
		{"api on every address with secret", func(c *Config) { c.API.Listen = ":9090"; c.API.Secret = "s3cret" }},
		{"auto_route defaults", autoRoute},
		{"auto_route without route_mark but with fwmark", func(c *Config) { autoRoute(c); c.TUN.RouteMark = 0; c.Upstream.Fwmark = 7 }},
		{"auto_route exclude inside include", func(c *Config) {
			autoRoute(c)
			c.TUN.RouteExclude = prefixes("198.19.0.5/32", "2001:2:0:1::5/128")
		}},
		{"auto_route private include without private excludes", func(c *Config) {
			autoRoute(c)
			c.TUN.RouteInclude = prefixes("10.1.0.0/16")
			c.TUN.ExcludePrivate = false
		}},
		{"dns hijack", hijack},
		{"dns hijack forward mode with domain rules", func(c *Config) {
			hijack(c)
			c.DNS.Mode = DNSForward
			c.Route.Rules = []Rule{{DomainSuffix: []string{"example"}, Outbound: OutboundReject}}
		}},
		{"fake range routed by auto_route", func(c *Config) {
			hijack(c)
			autoRoute(c)
			c.DNS.FakeIPRange = netip.MustParsePrefix("198.51.100.0/24")
		}},
		{"auto_route IPv4 only", func(c *Config) {
			autoRoute(c)
			c.TUN.Addresses = prefixes("198.18.0.1/15")
			c.TUN.RouteInclude = prefixes("0.0.0.0/0")
		}},
		{"auto_route uids", func(c *Config) {
			autoRoute(c)
			c.TUN.IncludeUID = []string{"1000", " 2000 - 2999 "}
			c.TUN.ExcludeUID = []string{"0"}
			c.TUN.StrictRoute = true
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
		})
	}
}

func TestSocketMark_AutoRouteMarksTheGatewaysSockets(t *testing.T) {
	c := Default()
	if m := c.SocketMark(); m != 0 {
		t.Errorf("without auto_route: mark %#x, want none", m)
	}
	autoRoute(c)
	if m, k := c.SocketMark(), c.MarkKey(); m != DefaultRouteMark || k != "tun.route_mark" {
		t.Errorf("auto_route: mark %#x from %s, want tun.route_mark %#x", m, k, DefaultRouteMark)
	}
	c.Upstream.Fwmark = 7
	if m, k := c.SocketMark(), c.MarkKey(); m != 7 || k != "upstream.fwmark" {
		t.Errorf("auto_route with upstream.fwmark: mark %#x from %s, want 7 from upstream.fwmark", m, k)
	}
}

func TestValidate_ReportsEveryProblemAtOnce(t *testing.T) {
	c := Default()
	c.TUN.MTU = 70000
	c.Stack.Kind = "lwip"
	c.Upstream.Kind = UpstreamSOCKS5
	c.Log.Level = "loud"
	want := []string{
		"tun.mtu: 70000 is out of range [576, 65535]",
		`stack.kind: "lwip" is not one of gvisor, custom`,
		"upstream.address: is required when upstream.kind is socks5 (host:port of the proxy)",
		`log.level: "loud" is not one of debug, info, warn, error`,
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("Validate() =\n%s\nwant\n%s", err, strings.Join(want, "\n"))
	}
	var p Problem
	if !errors.As(err, &p) || p.Key != "tun.mtu" {
		t.Fatalf("errors.As(err, *Problem) = %v, first problem should be tun.mtu", p)
	}
}

func TestProblem_ErrorNamesSource(t *testing.T) {
	p := Problem{Key: "tun.mtu", Message: "70000 is out of range [576, 65535]", Source: "TUNGATE_TUN_MTU"}
	want := "tun.mtu: 70000 is out of range [576, 65535] (from TUNGATE_TUN_MTU)"
	if p.Error() != want {
		t.Fatalf("Error() = %q, want %q", p.Error(), want)
	}
}
