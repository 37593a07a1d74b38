package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Limits enforced by Validate.
const (
	minMTU     = 576   // the smallest datagram every IPv4 host must accept
	minMTUIPv6 = 1280  // RFC 8200 §5
	maxMTU     = 65535 // the IPv4/IPv6 length field
	ifNameMax  = 15    // IFNAMSIZ - 1

	minBufferSize = 4 << 10
	maxBufferSize = 1 << 30
	maxInFlight   = 1 << 20
	maxTimeWait   = 1 << 24

	socks5CredentialMax = 255 // RFC 1929: one length octet
)

// Validate checks every setting and returns nil or an *Error listing all
// problems at once, each naming its key path, e.g.
// "tun.mtu: 70000 is out of range [576, 65535]".
func (c *Config) Validate() error {
	var ps problems
	c.TUN.validate(&ps)
	c.TUN.validateAutoRoute(&ps, &c.Upstream)
	c.Stack.validate(&ps)
	c.Upstream.validate(&ps, c.TUN.Name)
	c.validateOutbounds(&ps)
	c.validateRoute(&ps)
	c.validateDNS(&ps)
	c.Proxy.validate(&ps)
	c.UDP.validate(&ps)
	c.API.validate(&ps)
	c.Log.validate(&ps)
	c.validateLoops(&ps)
	return ps.err()
}

func (t *TUN) validate(ps *problems) {
	checkIfName(ps, "tun.name", t.Name)
	checkRange(ps, "tun.mtu", t.MTU, minMTU, maxMTU)
	checkOneOf(ps, "tun.offload", t.Offload, OffloadAuto, OffloadOff)
	if t.QueueCount(1) == 0 {
		ps.add("tun.queues", "%q is neither auto nor a count of queues 1–%d", t.Queues, MaxQueues)
	}
	if len(t.Addresses) == 0 {
		ps.add("tun.addresses", "must list at least one address")
	}
	for i, p := range t.Addresses {
		key := fmt.Sprintf("tun.addresses[%d]", i)
		checkAddress(ps, key, p)
		checkDuplicate(ps, key, "tun.addresses", t.Addresses[:i], p)
	}
	if i := slices.IndexFunc(t.Addresses, func(p netip.Prefix) bool { return p.Addr().Is6() }); i >= 0 && t.MTU >= minMTU && t.MTU < minMTUIPv6 {
		ps.add("tun.mtu", "%d is below %d, the IPv6 minimum, and tun.addresses[%d] is IPv6", t.MTU, minMTUIPv6, i)
	}
	for i, p := range t.Routes {
		key := fmt.Sprintf("tun.routes[%d]", i)
		checkRoute(ps, key, p)
		checkDuplicate(ps, key, "tun.routes", t.Routes[:i], p)
	}
}

func (s *Stack) validate(ps *problems) {
	checkOneOf(ps, "stack.kind", s.Kind, StackGVisor, StackCustom)
	g := &s.GVisor
	checkRange(ps, "stack.gvisor.receive_buffer_size", g.ReceiveBufferSize, minBufferSize, maxBufferSize)
	checkRange(ps, "stack.gvisor.send_buffer_size", g.SendBufferSize, minBufferSize, maxBufferSize)
	checkOneOf(ps, "stack.gvisor.congestion_control", g.CongestionControl, CongestionCubic, CongestionReno)
	checkRange(ps, "stack.gvisor.max_inflight_syn", g.MaxInFlightSYN, 1, maxInFlight)
	s.Custom.validate(ps)
}

func (c *Custom) validate(ps *problems) {
	checkRange(ps, "stack.custom.receive_buffer_size", c.ReceiveBufferSize, minBufferSize, maxBufferSize)
	checkRange(ps, "stack.custom.receive_buffer_max", c.ReceiveBufferMax, c.ReceiveBufferSize, maxBufferSize)
	checkRange(ps, "stack.custom.send_buffer_size", c.SendBufferSize, minBufferSize, maxBufferSize)
	checkPositive(ps, "stack.custom.buffer_idle", c.BufferIdle)
	checkOneOf(ps, "stack.custom.congestion_control", c.CongestionControl, CongestionCubic, CongestionNewReno)
	checkPositive(ps, "stack.custom.delayed_ack", c.DelayedAck)
	if c.DelayedAck >= 500*time.Millisecond {
		ps.add("stack.custom.delayed_ack", "%v must be below 500ms (RFC 9293 §3.8.6.3)", c.DelayedAck)
	}
	checkPositive(ps, "stack.custom.time_wait", c.TimeWait)
	checkRange(ps, "stack.custom.max_time_wait", c.MaxTimeWait, 1, maxTimeWait)
	checkPositive(ps, "stack.custom.fin_wait2_timeout", c.FinWait2Timeout)
	checkRange(ps, "stack.custom.synack_retries", c.SynAckRetries, 1, 10)
	if c.KeepaliveIdle < 0 {
		ps.add("stack.custom.keepalive_idle", "%v is negative; 0 disables keepalives", c.KeepaliveIdle)
	}
	checkPositive(ps, "stack.custom.keepalive_interval", c.KeepaliveInterval)
	checkRange(ps, "stack.custom.keepalive_count", c.KeepaliveCount, 1, 100)
	checkRange(ps, "stack.custom.syn_backlog", c.SynBacklog, 1, maxInFlight)
	checkRange(ps, "stack.custom.pending_backlog", c.PendingBacklog, 1, maxInFlight)
	checkRange(ps, "stack.custom.challenge_ack_limit", c.ChallengeAckLimit, 0, maxInFlight)
	checkRange(ps, "stack.custom.challenge_ack_global_limit", c.ChallengeAckGlobalLimit, 0, maxInFlight)
}

func (u *Upstream) validate(ps *problems, tunName string) { u.validateAt(ps, "upstream", tunName) }

// validateAt checks the upstream fields under the key prefix (upstream,
// outbounds[N]).
func (u *Upstream) validateAt(ps *problems, prefix, tunName string) {
	checkOneOf(ps, prefix+".kind", u.Kind, UpstreamDirect, UpstreamSOCKS5, UpstreamHTTP)
	switch u.Kind {
	case UpstreamDirect:
		u.validateDirect(ps, prefix)
	case UpstreamSOCKS5, UpstreamHTTP:
		u.validateProxied(ps, prefix)
	}
	if u.BindInterface != "" {
		checkIfName(ps, prefix+".bind_interface", u.BindInterface)
		if u.BindInterface == tunName {
			ps.add(prefix+".bind_interface", "%q is the gateway's own TUN (tun.name); upstream connections would loop back into it", u.BindInterface)
		}
	}
	checkPositive(ps, prefix+".connect_timeout", u.ConnectTimeout)
	if u.UDP && u.Kind == UpstreamHTTP {
		ps.add(prefix+".udp", "is true but %s.kind is http, which carries no UDP; use socks5 (UDP ASSOCIATE) or remove it", prefix)
	}
}

// validateDirect rejects settings that a direct upstream would silently
// ignore: they are almost always left over from a proxy setup.
func (u *Upstream) validateDirect(ps *problems, prefix string) {
	why := "is set but " + prefix + ".kind is direct, which connects to each destination itself; remove it or use socks5 or http"
	if u.Address != "" {
		ps.add(prefix+".address", "%q %s", u.Address, why)
	}
	if u.Username != "" {
		ps.add(prefix+".username", "%s", why)
	}
	if u.Password != "" {
		ps.add(prefix+".password", "%s", why)
	}
}

func (u *Upstream) validateProxied(ps *problems, prefix string) {
	if u.Address == "" {
		ps.add(prefix+".address", "is required when %s.kind is %s (host:port of the proxy)", prefix, u.Kind)
	} else if msg := checkHostPort(u.Address); msg != "" {
		ps.add(prefix+".address", "%q %s", u.Address, msg)
	}
	if u.Password != "" && u.Username == "" {
		ps.add(prefix+".password", "is set without %s.username", prefix)
	}
	if u.Kind == UpstreamSOCKS5 {
		if len(u.Username) > socks5CredentialMax {
			ps.add(prefix+".username", "is %d bytes, more than the SOCKS5 limit of %d (RFC 1929)", len(u.Username), socks5CredentialMax)
		}
		if len(u.Password) > socks5CredentialMax {
			ps.add(prefix+".password", "is %d bytes, more than the SOCKS5 limit of %d (RFC 1929)", len(u.Password), socks5CredentialMax)
		}
	}
}

func (p *Proxy) validate(ps *problems) {
	checkPositive(ps, "proxy.idle_timeout", p.IdleTimeout)
	checkPositive(ps, "proxy.half_close_timeout", p.HalfCloseTimeout)
	checkPositive(ps, "proxy.udp_idle_timeout", p.UDPIdleTimeout)
	if p.MaxConnections < -1 {
		ps.add("proxy.max_connections", "is %d; want a positive limit, 0 (derived from the open-file limit) or -1 (none)", p.MaxConnections)
	}
}

func (u *UDP) validate(ps *problems) {
	checkOneOf(ps, "udp.nat", u.NAT, NATFullCone, NATSymmetric)
	if u.MaxSessions < 0 {
		ps.add("udp.max_sessions", "is %d; want a positive limit or 0 (derived from the open-file limit)", u.MaxSessions)
	}
}

func (l *Log) validate(ps *problems) {
	checkOneOf(ps, "log.level", l.Level, "debug", "info", "warn", "error")
	checkOneOf(ps, "log.format", l.Format, LogText, LogJSON)
}

// validateLoops rejects routes that would carry the gateway's own upstream
// connections back into the TUN. Without a fwmark (paired with an ip rule)
// or a bound interface, the kernel routes the gateway's sockets by the same
// table as everyone else's.
func (c *Config) validateLoops(ps *problems) {
	u := &c.Upstream
	if u.Fwmark != 0 || u.BindInterface != "" {
		return
	}
	const escape = "set upstream.fwmark (with a matching ip rule) or upstream.bind_interface"
	for i, r := range c.TUN.Routes {
		if u.Kind == UpstreamDirect && r.IsValid() && r.Bits() <= 1 {
			ps.add(fmt.Sprintf("tun.routes[%d]", i),
				"%s covers the default route while upstream.kind is direct and neither upstream.fwmark nor upstream.bind_interface is set: "+
					"the gateway's own connections to every destination would be routed back into the TUN (a loop); %s, or route narrower prefixes",
				r, escape)
		}
	}
	if u.Kind != UpstreamSOCKS5 && u.Kind != UpstreamHTTP {
		return
	}
	host, _, err := net.SplitHostPort(u.Address)
	if err != nil {
		return
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return // a host name: where it resolves is unknown here
	}
	for i, r := range c.TUN.Routes {
		if r.IsValid() && r.Contains(ip.Unmap()) {
			ps.add("upstream.address",
				"the proxy %s is inside tun.routes[%d] (%s) and neither upstream.fwmark nor upstream.bind_interface is set: "+
					"connections to the proxy would be routed back into the TUN (a loop); %s", ip, i, r, escape)
			return
		}
	}
}

func checkRange(ps *problems, key string, v, lo, hi int) {
	if v < lo || v > hi {
		ps.add(key, "%d is out of range [%d, %d]", v, lo, hi)
	}
}

func checkPositive(ps *problems, key string, d time.Duration) {
	if d <= 0 {
		ps.add(key, "%s must be positive", d)
	}
}

func checkOneOf(ps *problems, key, v string, valid ...string) {
	if !slices.Contains(valid, v) {
		ps.add(key, "%q is not one of %s", v, strings.Join(valid, ", "))
	}
}

// checkIfName applies the kernel's rules for interface names
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':' or space.
func checkIfName(ps *problems, key, name string) {
	switch {
	case name == "":
		ps.add(key, "must not be empty")
	case len(name) > ifNameMax:
		ps.add(key, "%q is %d bytes, longer than the kernel limit of %d", name, len(name), ifNameMax)
	case name == "." || name == "..":
		ps.add(key, "%q is not a valid interface name", name)
	case strings.ContainsFunc(name, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) }):
		ps.add(key, "%q contains '/', ':' or white space, which interface names cannot", name)
	}
}

func checkAddress(ps *problems, key string, p netip.Prefix) {
	a := p.Addr()
	switch {
	case !p.IsValid():
		ps.add(key, "is not a valid address/prefix-length")
	case a.Is4In6():
		ps.add(key, "%s is an IPv4-mapped IPv6 address; write it as IPv4", p)
	case a.IsUnspecified(), a.IsMulticast():
		ps.add(key, "%s cannot be an interface address", a)
	}
}

func checkRoute(ps *problems, key string, p netip.Prefix) {
	switch {
	case !p.IsValid():
		ps.add(key, "is not a valid prefix")
	case p.Addr().Is4In6():
		ps.add(key, "%s is an IPv4-mapped IPv6 prefix; write it as IPv4", p)
	case p != p.Masked():
		ps.add(key, "%s has bits set beyond the prefix length; did you mean %s?", p, p.Masked())
	}
}

// checkDuplicate reports p when it already occurs in earlier. Two addresses
// are duplicates when their addresses are equal whatever the prefix length.
func checkDuplicate(ps *problems, key, list string, earlier []netip.Prefix, p netip.Prefix) {
	for j, q := range earlier {
		if q.Addr() == p.Addr() && (list == "tun.addresses" || q.Bits() == p.Bits()) {
			ps.add(key, "%s duplicates %s[%d]", p, list, j)
			return
		}
	}
}

// checkHostPort returns why addr is not a usable host:port, or "".
func checkHostPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "is not host:port: " + strings.TrimPrefix(err.Error(), "address "+addr+": ")
	}
	if host == "" {
		return "has an empty host"
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostName(host) {
		return fmt.Sprintf("has host %q, which is neither an IP address nor a host name", host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Sprintf("has port %q, which is not a number in [1, 65535]", port)
	}
	return ""
}

// validHostName accepts DNS names made of letters, digits, '-', '_' and
// dots, at most 253 bytes, with no empty label.
func validHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
				return false
			}
		}
	}
	return true
}
