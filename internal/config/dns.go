package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// DNS modes (dns.mode).
const (
	DNSFakeIP  = "fake-ip"
	DNSForward = "forward"
)

// DNS is the gateway's DNS side.
type DNS struct {
	// Hijack answers every DNS query that enters the TUN (any address,
	// port 53, UDP and TCP) with the gateway's own DNS server.
	Hijack bool `mapstructure:"hijack"`
	// Mode is DNSFakeIP (A/AAAA answered from the fake ranges) or
	// DNSForward (everything forwarded, answers cached).
	Mode string `mapstructure:"mode"`
	// FakeIPRange and FakeIP6Range hold the fake addresses; they must be
	// routed into the TUN.
	FakeIPRange  netip.Prefix `mapstructure:"fake_ip_range"`
	FakeIP6Range netip.Prefix `mapstructure:"fake_ip6_range"`
	// Servers are the resolvers queries are forwarded to (host:port, IP
	// literals), and that direct outbounds resolve fake IPs' names with.
	Servers []string `mapstructure:"servers"`
	// CacheFile keeps the fake-IP mappings across restarts (bbolt); empty
	// keeps them in memory only.
	CacheFile string `mapstructure:"cache_file"`
	// DomainExclude are domain suffixes answered with real addresses in
	// fake-ip mode (local names).
	DomainExclude []string `mapstructure:"domain_exclude"`
}

// Defaults of the dns section: the fake ranges are the upper halves of the
// TUN's default prefixes, so they route into it with no further routes.
var (
	DefaultFakeIPRange  = netip.MustParsePrefix("198.18.128.0/17")
	DefaultFakeIP6Range = netip.MustParsePrefix("2001:2:0:0:8000::/65")
)

// DefaultDNSCacheFile is where the fake-IP mappings are kept.
const DefaultDNSCacheFile = "/var/lib/tungate/dns.db"

func (c *Config) validateDNS(ps *problems) {
	d := &c.DNS
	checkOneOf(ps, "dns.mode", d.Mode, DNSFakeIP, DNSForward)
	checkFakeRange(ps, "dns.fake_ip_range", d.FakeIPRange, false, 30)
	checkFakeRange(ps, "dns.fake_ip6_range", d.FakeIP6Range, true, 126)
	for i, s := range d.Servers {
		key := fmt.Sprintf("dns.servers[%d]", i)
		host, port, err := net.SplitHostPort(s)
		a, aerr := netip.ParseAddr(host)
		switch {
		case err != nil || port == "":
			ps.add(key, "%q is not host:port (198.19.0.2:53)", s)
		case aerr != nil:
			ps.add(key, "%q: the host must be an IP address (a name would need DNS to find DNS)", s)
		case d.FakeIPRange.Contains(a.Unmap()) || d.FakeIP6Range.Contains(a):
			ps.add(key, "%s is a fake address: queries would loop", a)
		case slices.ContainsFunc(c.TUN.Addresses, func(p netip.Prefix) bool { return p.Addr() == a.Unmap() }):
			ps.add(key, "%s is the TUN's own address: queries would loop", a)
		}
	}
	for i, s := range d.DomainExclude {
		if checkDomain(s) != "" {
			ps.add(fmt.Sprintf("dns.domain_exclude[%d]", i), "%q %s", s, checkDomain(s))
		}
	}
	if !d.Hijack {
		const why = "is set but dns.hijack is false, so it would do nothing; set dns.hijack: true"
		if len(d.Servers) > 0 {
			ps.add("dns.servers", why)
		}
		if len(d.DomainExclude) > 0 {
			ps.add("dns.domain_exclude", why)
		}
		return
	}
	if len(d.Servers) == 0 {
		ps.add("dns.servers", "is required with dns.hijack: the resolvers to forward to (and that direct outbounds resolve with)")
	}
	if d.Mode == DNSFakeIP {
		c.checkFakeRouted(ps, "dns.fake_ip_range", d.FakeIPRange)
		c.checkFakeRouted(ps, "dns.fake_ip6_range", d.FakeIP6Range)
	}
}

func checkFakeRange(ps *problems, key string, p netip.Prefix, v6 bool, maxBits int) {
	switch {
	case !p.IsValid():
		ps.add(key, "is not a valid prefix")
	case p.Addr().Is6() != v6 || p.Addr().Is4In6():
		ps.add(key, "%s is not an %s prefix", p, map[bool]string{false: "IPv4", true: "IPv6"}[v6])
	case p != p.Masked():
		ps.add(key, "%s has bits set beyond the prefix length; did you mean %s?", p, p.Masked())
	case p.Bits() > maxBits:
		ps.add(key, "%s is too small; at most /%d", p, maxBits)
	}
}

// checkFakeRouted rejects a fake range that would not reach the TUN:
// inside neither a TUN address's prefix, nor tun.routes, nor what
// auto_route captures.
func (c *Config) checkFakeRouted(ps *problems, key string, r netip.Prefix) {
	if !r.IsValid() {
		return
	}
	covers := func(p netip.Prefix) bool { return p.IsValid() && p.Bits() <= r.Bits() && p.Contains(r.Addr()) }
	if slices.ContainsFunc(c.TUN.Addresses, func(p netip.Prefix) bool { return covers(p.Masked()) }) ||
		slices.ContainsFunc(c.TUN.Routes, covers) ||
		c.TUN.AutoRoute && slices.ContainsFunc(c.TUN.RouteInclude, covers) {
		return
	}
	ps.add(key, "%s is routed into the TUN by neither tun.addresses, tun.routes nor tun.auto_route: connections to fake addresses would never reach the gateway", r)
}

// checkDomain returns why d is not a domain name, or "".
func checkDomain(d string) string {
	d = strings.TrimSuffix(d, ".")
	if d == "" || !validHostName(d) {
		return "is not a domain name"
	}
	return ""
}
