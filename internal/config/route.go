package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tungate/tungate/rule"
)

// Built-in outbounds: names every configuration has.
const (
	// OutboundUpstream is the upstream block, as an outbound.
	OutboundUpstream = "upstream"
	// OutboundDirect connects to the destination itself, with the
	// upstream block's fwmark and bind_interface.
	OutboundDirect = "direct"
	// OutboundReject refuses: a TCP flow gets a RST to its SYN (connection
	// refused at once), a UDP flow an ICMP port unreachable.
	OutboundReject = "reject"
	// OutboundDrop answers nothing: the app's own timeouts apply.
	OutboundDrop = "drop"
)

// BuiltinOutbounds are the outbound names every configuration has.
var BuiltinOutbounds = []string{OutboundUpstream, OutboundDirect, OutboundReject, OutboundDrop}

// Outbound is one named upstream of the outbounds list: the fields of the
// upstream block plus a name rules refer to.
type Outbound struct {
	Name           string        `mapstructure:"name"`
	Kind           string        `mapstructure:"kind"`
	Address        string        `mapstructure:"address"`
	Username       string        `mapstructure:"username"`
	Password       string        `mapstructure:"password"`
	Fwmark         uint32        `mapstructure:"fwmark"`
	BindInterface  string        `mapstructure:"bind_interface"`
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	UDP            bool          `mapstructure:"udp"`
}

// Upstream is the outbound's upstream fields; a zero connect_timeout is
// upstream.connect_timeout's.
func (o *Outbound) Upstream(def time.Duration) Upstream {
	t := o.ConnectTimeout
	if t == 0 {
		t = def
	}
	return Upstream{Kind: o.Kind, Address: o.Address, Username: o.Username, Password: o.Password,
		Fwmark: o.Fwmark, BindInterface: o.BindInterface, ConnectTimeout: t, UDP: o.UDP}
}

// Route chooses an outbound per flow.
type Route struct {
	// Rules are tried in order, the first match wins; the matchers within
	// one rule are ANDed.
	Rules []Rule `mapstructure:"rules"`
	// Final is the outbound of flows no rule matches.
	Final string `mapstructure:"final"`
	// Sniff routes TCP flows whose domain the DNS side does not know by
	// the name in their first bytes (TLS server name, HTTP Host). Such a
	// flow's handshake completes before its upstream is dialed.
	Sniff bool `mapstructure:"sniff"`
}

// Rule is one entry of route.rules (see package rule).
type Rule struct {
	Domain        []string       `mapstructure:"domain"`
	DomainSuffix  []string       `mapstructure:"domain_suffix"`
	DomainKeyword []string       `mapstructure:"domain_keyword"`
	IPCIDR        []netip.Prefix `mapstructure:"ip_cidr"`
	Port          []uint16       `mapstructure:"port"`
	// PortRange items are "LO-HI", inclusive.
	PortRange []string `mapstructure:"port_range"`
	// Network is "tcp", "udp" or empty for both.
	Network    string         `mapstructure:"network"`
	SourceCIDR []netip.Prefix `mapstructure:"source_cidr"`
	Outbound   string         `mapstructure:"outbound"`
}

// OutboundNames lists every outbound a rule may name: the built-ins, then
// the outbounds list's.
func (c *Config) OutboundNames() []string {
	names := slices.Clone(BuiltinOutbounds)
	for _, o := range c.Outbounds {
		names = append(names, o.Name)
	}
	return names
}

// RuleSet compiles route.rules; the configuration must be valid.
func (c *Config) RuleSet() (*rule.Set, error) {
	rules := make([]rule.Rule, len(c.Route.Rules))
	for i := range c.Route.Rules {
		r, _ := c.Route.Rules[i].compile()
		rules[i] = r
	}
	return rule.Compile(rules, c.Route.Final, c.OutboundNames())
}

// compile converts r; it returns the key of the first value that does not
// convert, with why.
func (r *Rule) compile() (rule.Rule, *Problem) {
	out := rule.Rule{
		Domain: r.Domain, DomainSuffix: r.DomainSuffix, DomainKeyword: r.DomainKeyword,
		IPCIDR: r.IPCIDR, Port: r.Port, SourceCIDR: r.SourceCIDR, Outbound: r.Outbound,
	}
	switch strings.ToLower(r.Network) {
	case "":
	case "tcp":
		out.Network = rule.NetworkTCP
	case "udp":
		out.Network = rule.NetworkUDP
	default:
		return out, &Problem{Key: "network", Message: fmt.Sprintf("%q is not one of tcp, udp", r.Network)}
	}
	for i, s := range r.PortRange {
		pr, err := parsePortRange(s)
		if err != nil {
			return out, &Problem{Key: fmt.Sprintf("port_range[%d]", i), Message: err.Error()}
		}
		out.PortRange = append(out.PortRange, pr)
	}
	return out, nil
}

func parsePortRange(s string) (rule.PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return rule.PortRange{}, fmt.Errorf("%q is not a port range (8000-8999)", s)
	}
	return rule.PortRange{Lo: uint16(a), Hi: uint16(b)}, nil
}

func (c *Config) validateOutbounds(ps *problems) {
	seen := map[string]string{}
	for _, b := range BuiltinOutbounds {
		seen[b] = "a built-in outbound"
	}
	for i := range c.Outbounds {
		o := &c.Outbounds[i]
		key := fmt.Sprintf("outbounds[%d]", i)
		switch {
		case o.Name == "":
			ps.add(key+".name", "is required")
		case seen[o.Name] != "":
			ps.add(key+".name", "%q is already %s", o.Name, seen[o.Name])
		default:
			seen[o.Name] = key
		}
		if o.ConnectTimeout < 0 {
			ps.add(key+".connect_timeout", "%v is negative; 0 means upstream.connect_timeout", o.ConnectTimeout)
		}
		up := o.Upstream(c.Upstream.ConnectTimeout)
		up.validateAt(ps, key, c.TUN.Name)
		if c.TUN.AutoRoute && o.Fwmark != 0 && o.Fwmark != c.SocketMark() {
			ps.add(key+".fwmark", "%#x differs from %s %#x, the mark tun.auto_route exempts from the capture: this outbound's connections would loop into the TUN; leave it 0", o.Fwmark, c.MarkKey(), c.SocketMark())
		}
	}
}

func (c *Config) validateRoute(ps *problems) {
	rules := make([]rule.Rule, len(c.Route.Rules))
	failed := map[int]bool{}
	for i := range c.Route.Rules {
		key := fmt.Sprintf("route.rules[%d]", i)
		r, p := c.Route.Rules[i].compile()
		if p != nil {
			ps.add(key+"."+p.Key, "%s", p.Message)
			failed[i] = true
		}
		if len(r.Domain)+len(r.DomainSuffix)+len(r.DomainKeyword) > 0 && !c.DNS.Hijack && !c.Route.Sniff {
			ps.add(key, "domain matchers need dns.hijack or route.sniff: the gateway knows a flow's domain only from the DNS answers it gave or the first bytes of the flow")
		}
		rules[i] = r
	}
	if c.Route.Final == "" {
		ps.add("route.final", "is required (%s for the upstream block)", OutboundUpstream)
	}
	_, err := rule.Compile(rules, c.Route.Final, c.OutboundNames())
	for _, e := range unwrapAll(err) {
		re, ok := e.(*rule.Error)
		if !ok {
			ps.add("route", "%v", e)
			continue
		}
		if failed[re.Rule] {
			continue // a rule half converted: its other problems would mislead
		}
		key := "route.final"
		if re.Rule >= 0 {
			key = fmt.Sprintf("route.rules[%d]", re.Rule)
			if re.Field != "rule" {
				key += "." + re.Field
			}
		} else if c.Route.Final == "" {
			continue // said above
		}
		ps.add(key, "%s", re.Msg)
	}
}

func unwrapAll(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
