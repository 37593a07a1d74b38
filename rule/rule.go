// Package rule decides which outbound carries a flow: an ordered list of
// rules, first match wins, each naming an outbound, and a final outbound for
// everything else (route.rules, route.final).
//
// A rule's matchers are ANDed: every kind of matcher the rule has must match.
// Within one matcher, any of its values matching is enough. A Set is
// compiled once per configuration and then answers Match concurrently,
// without allocating, in time that depends on the flow rather than on the
// number of rules: each rule is indexed by one of its matchers (its most
// selective: exact domain, then domain suffix, then destination prefix,
// then keyword), a flow looks up the rules its domain and address can
// match at all, and only those are checked in full, in rule order.
package rule

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Network restricts a rule to TCP or UDP flows.
type Network uint8

const (
	// NetworkAny matches both; it is a rule without a network matcher.
	NetworkAny Network = iota
	NetworkTCP
	NetworkUDP
)

func (n Network) String() string {
	switch n {
	case NetworkTCP:
		return "tcp"
	case NetworkUDP:
		return "udp"
	}
	return "any"
}

// PortRange is an inclusive range of destination ports.
type PortRange struct{ Lo, Hi uint16 }

// Rule is one entry of route.rules. Empty matchers match everything; a
// rule with no matcher at all is refused by Compile (it would shadow every
// rule after it; route.final says that).
type Rule struct {
	// Domain matches the flow's domain exactly.
	Domain []string
	// DomainSuffix matches the domain and its subdomains ("example.com"
	// matches example.com and www.example.com, not notexample.com); with a
	// leading dot (".example.com") only subdomains.
	DomainSuffix []string
	// DomainKeyword matches a domain containing the keyword.
	DomainKeyword []string
	// IPCIDR matches the destination address.
	IPCIDR []netip.Prefix
	// Port and PortRange match the destination port (either list).
	Port      []uint16
	PortRange []PortRange
	// Network matches the flow's transport.
	Network Network
	// SourceCIDR matches the source address (the app's).
	SourceCIDR []netip.Prefix
	// Outbound names where matching flows go.
	Outbound string
}

// Flow is what rules look at.
type Flow struct {
	Network  Network
	Src, Dst netip.AddrPort
	// Domain is the destination's name when known (fake IP, DNS memory,
	// sniffing), normalised with NormalizeDomain; "" when unknown, which
	// no domain matcher matches.
	Domain string
}

// Result says which outbound a flow goes to and why.
type Result struct {
	// Outbound is the name of the outbound.
	Outbound string
	// Rule is the index of the matching rule in the list Compile got, or
	// -1 when no rule matched and the flow goes to the final outbound.
	Rule int
}

// NormalizeDomain lower-cases d and drops a trailing dot, the form rules
// and Flow.Domain use.
func NormalizeDomain(d string) string {
	d = strings.TrimSuffix(d, ".")
	for i := 0; i < len(d); i++ {
		if c := d[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(d)
		}
	}
	return d
}

// Error is a problem with one rule of the list given to Compile.
type Error struct {
	// Rule is the index of the rule; Field the matcher ("domain_suffix")
	// or "outbound"; Msg what is wrong.
	Rule  int
	Field string
	Msg   string
}

func (e *Error) Error() string { return fmt.Sprintf("rule %d: %s: %s", e.Rule, e.Field, e.Msg) }

// Compile checks rules and builds the Set that matches them, with final as
// the outbound for flows no rule matches. outbounds, when not nil, lists
// the valid outbound names: a rule or final naming another is an error.
// All problems are returned, each an *Error (final's has Rule -1).
func Compile(rules []Rule, final string, outbounds []string) (*Set, error) {
	s := newSet(final)
	var errs []error
	known := func(i int, name string) {
		if name == "" {
			errs = append(errs, &Error{i, "outbound", "is required"})
		} else if outbounds != nil && !slices.Contains(outbounds, name) {
			errs = append(errs, &Error{i, "outbound", fmt.Sprintf("%q is not an outbound", name)})
		}
	}
	known(-1, final)
	for i := range rules {
		known(i, rules[i].Outbound)
		if err := s.add(i, &rules[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.finish()
	return s, nil
}

// check validates r's values; it returns the first problem.
func check(i int, r *Rule) error {
	if len(r.Domain)+len(r.DomainSuffix)+len(r.DomainKeyword)+len(r.IPCIDR)+len(r.Port)+len(r.PortRange)+len(r.SourceCIDR) == 0 && r.Network == NetworkAny {
		return &Error{i, "rule", "has no matcher; it would match every flow (use route.final for that)"}
	}
	for _, d := range r.Domain {
		if err := checkDomain(d, false); err != "" {
			return &Error{i, "domain", fmt.Sprintf("%q %s", d, err)}
		}
	}
	for _, d := range r.DomainSuffix {
		if err := checkDomain(d, true); err != "" {
			return &Error{i, "domain_suffix", fmt.Sprintf("%q %s", d, err)}
		}
	}
	for _, k := range r.DomainKeyword {
		if k == "" {
			return &Error{i, "domain_keyword", "an empty keyword matches every domain"}
		}
	}
	for _, field := range []struct {
		name string
		ps   []netip.Prefix
	}{{"ip_cidr", r.IPCIDR}, {"source_cidr", r.SourceCIDR}} {
		for _, p := range field.ps {
			switch {
			case !p.IsValid():
				return &Error{i, field.name, "is not a valid prefix"}
			case p.Addr().Is4In6():
				return &Error{i, field.name, fmt.Sprintf("%s is IPv4-mapped; write it as IPv4", p)}
			case p != p.Masked():
				return &Error{i, field.name, fmt.Sprintf("%s has bits set beyond the prefix length; did you mean %s?", p, p.Masked())}
			}
		}
	}
	for _, pr := range r.PortRange {
		if pr.Lo > pr.Hi {
			return &Error{i, "port_range", fmt.Sprintf("%d-%d starts above its end", pr.Lo, pr.Hi)}
		}
	}
	return nil
}

// checkDomain returns why d is not a usable domain matcher, or "".
func checkDomain(d string, suffix bool) string {
	if suffix {
		d = strings.TrimPrefix(d, ".")
	}
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "is empty"
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return "has an empty label"
		}
	}
	if strings.ContainsAny(d, " /:*") {
		return "contains ' ', '/', ':' or '*' (write a suffix as example.com, not *.example.com)"
	}
	return ""
}
