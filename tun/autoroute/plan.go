// Package autoroute captures the machine's traffic into the gateway's TUN
// with policy routing, and leaves nothing behind.
//
// It is two halves. A Plan is pure: the exact ip rules and routes computed
// from a Config, printable (`gateway route plan`) and unit-tested without
// root. Install applies a Plan on netlink and returns what it added, which
// Remove takes away again; Cleanup finds what an earlier run that died
// (SIGKILL, a crash) left behind and removes it.
//
// Everything lives in one routing table of its own (Config.Table) reached by
// rules in one block of priorities (Config.Priority … +BlockSize-1); the main
// table is never changed. Every rule and route carries the routing-protocol
// marker Protocol, and every rule names Config.Table (also the jumps, whose
// action ignores it), so "ours" is exact: marker, table and priority block
// all match. Two gateways with different tables and priority blocks run side
// by side without touching each other's state.
//
// The block, per address family, in the order the kernel walks it:
//
//	P+0  fwmark MARK goto P+9            the gateway's own sockets skip the capture
//	P+1  uidrange A-B goto P+9           tun.exclude_uid
//	P+2  to PREFIX goto P+9              loopback, the TUN's addresses, upstream proxies
//	P+3  ipproto udp|tcp dport 53 lookup T    strict_route: DNS into the TUN, whatever the destination
//	P+4  to PREFIX goto P+9              tun.route_exclude and the private defaults
//	P+5  from ADDR [uidrange A-B] lookup T  the capture (per tun.include_uid range, or everyone):
//	                                     ADDR is the TUN's (a captured flow) or, IPv4, 0.0.0.0
//	                                     (a new socket, before it has a source)
//	P+6  from ::/1, 8000::/1 goto P+9    IPv6: a flow from another local address is not captured
//	P+7  [uidrange A-B] lookup T         IPv6: a new socket (IPv6 rules by source only match
//	                                     lookups that have one)
//	P+9  nop                             end of the block: the host's own rules, then main
//
// Table T holds one route into the TUN per included prefix. A destination it
// has no route for falls through to the next rule, so tun.route_include is
// just that set of routes. With strict_route, T also holds an unreachable
// route per included prefix behind the TUN's (a higher metric): when the TUN
// disappears (the gateway died), captured traffic fails instead of leaking
// out of the main table's default route, until the next run or `gateway
// cleanup` removes the rules.
package autoroute

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Protocol is the routing-protocol number (rtm_protocol, FRA_PROTOCOL) on
// every rule and route autoroute adds: `ip rule` shows it as "proto 116".
// Numbers above RTPROT_STATIC (4) are free for routing daemons; 116 ('t')
// is not one iproute2's rt_protos names.
const Protocol = 116

// BlockSize is how many rule priorities, from Config.Priority on, the rules
// use.
const BlockSize = 10

// Offsets of each kind of rule in the block.
const (
	offOwnMark    = 0
	offExcludeUID = 1
	offNever      = 2
	offStrictDNS  = 3
	offExclude    = 4
	offCapture    = 5
	// IPv6 only, see addCapture6.
	offOtherSource = 6
	offCaptureNew6 = 7
	offEnd         = BlockSize - 1
)

// strictMetric is the metric of strict_route's unreachable routes: behind
// any route into the TUN, whatever metric that one has.
const strictMetric = 1<<32 - 1

// Reserved routing tables: unspec, default, main, local.
var reservedTables = []int{0, 253, 254, 255}

// UIDRange is an inclusive range of user ids (`ip rule uidrange`).
type UIDRange struct{ Start, End uint32 }

func (u UIDRange) String() string { return fmt.Sprintf("%d-%d", u.Start, u.End) }

// Config is what a Plan is computed from. Prefixes must be masked (no host
// bits); the config package validates the user's input before it gets here.
type Config struct {
	// TUN is the interface the captured traffic is routed to.
	TUN string
	// TUNAddresses are the TUN's own addresses, never captured.
	TUNAddresses []netip.Prefix
	// Table is the routing table of the TUN's routes; Priority the first
	// of the BlockSize rule priorities.
	Table    int
	Priority int
	// Mark is the SO_MARK of the gateway's own sockets; they skip the
	// capture. It must not be 0.
	Mark uint32
	// Include are the captured prefixes (0.0.0.0/0 and ::/0 for all); a
	// family without any is not touched at all.
	Include []netip.Prefix
	// Exclude stay on the host's other routes; with ExcludePrivate the
	// PrivatePrefixes are excluded too.
	Exclude        []netip.Prefix
	ExcludePrivate bool
	// IncludeUID, when not empty, limits the capture to sockets of these
	// users; ExcludeUID exempts users' sockets.
	IncludeUID []UIDRange
	ExcludeUID []UIDRange
	// Strict sends DNS (port 53, UDP and TCP) into the TUN whatever its
	// destination, and makes captured traffic fail rather than leak when
	// the TUN goes away.
	Strict bool
	// Upstreams are the addresses of the configured upstream proxies,
	// never captured.
	Upstreams []netip.Addr
}

// Excluded is a prefix with the reason it is excluded.
type Excluded struct {
	Prefix netip.Prefix
	Why    string
}

// PrivatePrefixes are the destinations tun.exclude_private keeps off the
// TUN, each with its reason: the machine's LAN, container bridges and
// link-local services must keep working while everything else is captured.
func PrivatePrefixes() []Excluded {
	p := netip.MustParsePrefix
	return []Excluded{
		{p("10.0.0.0/8"), "RFC 1918 private network (LAN, VPNs, container networks)"},
		{p("172.16.0.0/12"), "RFC 1918 private network (Docker's default bridges)"},
		{p("192.168.0.0/16"), "RFC 1918 private network (home LANs, the router)"},
		{p("169.254.0.0/16"), "IPv4 link-local (RFC 3927; cloud metadata services)"},
		{p("224.0.0.0/4"), "IPv4 multicast (mDNS, SSDP): link-scoped, nothing to relay"},
		{p("255.255.255.255/32"), "limited broadcast (DHCP)"},
		{p("fe80::/10"), "IPv6 link-local (neighbour discovery, router advertisements)"},
		{p("fc00::/7"), "IPv6 unique local addresses (RFC 4193, the IPv6 private networks)"},
		{p("ff00::/8"), "IPv6 multicast"},
	}
}

// loopback prefixes, never captured. The local table (rule 0) already keeps
// them local; the rules say so explicitly.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Action is what a rule does with a packet it matches.
type Action int

const (
	// Lookup looks the destination up in Rule.Table.
	Lookup Action = iota
	// Goto jumps to the rule at Rule.Goto, skipping the capture.
	Goto
	// Nop does nothing: the end of the block, target of the jumps.
	Nop
)

// Rule is one ip rule of a Plan.
type Rule struct {
	IPv6     bool
	Priority int
	Action   Action
	// Table is always the plan's table: on Goto and Nop it only marks the
	// rule as this plan's.
	Table int
	Goto  int
	// Selectors; zero values select everything.
	Mark     uint32
	Src      netip.Prefix
	Dst      netip.Prefix
	UIDRange *UIDRange
	IPProto  string // "udp" or "tcp", with Dport
	Dport    uint16
	// Why is the reason, printed by Plan.String.
	Why string
}

// Route is one route of a Plan, in the plan's table.
type Route struct {
	Dst netip.Prefix
	// Unreachable routes fail lookups (strict_route); the others send to
	// the TUN.
	Unreachable bool
	Metric      uint32
	Why         string
}

// Plan is the exact state Install adds: rules, then the routes of Table.
type Plan struct {
	TUN      string
	Table    int
	Priority int
	Rules    []Rule
	Routes   []Route
}

// NewPlan computes the rules and routes for cfg. It checks what a plan
// needs to make sense (a table and a priority block that are free to use, a
// mark, an include that is not wholly excluded) and touches nothing.
func NewPlan(cfg Config) (*Plan, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	p := &Plan{TUN: cfg.TUN, Table: cfg.Table, Priority: cfg.Priority}
	for _, v6 := range []bool{false, true} {
		include := ofFamily(cfg.Include, v6)
		if len(include) == 0 {
			continue
		}
		if len(ofFamily(cfg.TUNAddresses, v6)) == 0 {
			return nil, fmt.Errorf("autoroute: %s is to be captured but the TUN has no %s address to be its source", include[0], family(v6))
		}
		p.addRules(cfg, v6)
		for _, dst := range include {
			p.Routes = append(p.Routes, Route{Dst: dst, Why: "captured: into the TUN"})
		}
		if cfg.Strict {
			for _, dst := range include {
				p.Routes = append(p.Routes, Route{Dst: dst, Unreachable: true, Metric: strictMetric,
					Why: "strict_route: fail, not leak, when the TUN is gone"})
			}
		}
	}
	return p, nil
}

func (cfg *Config) check() error {
	var errs []error
	if slices.Contains(reservedTables, cfg.Table) || cfg.Table < 0 {
		errs = append(errs, fmt.Errorf("autoroute: table %d is reserved (0, 253 default, 254 main, 255 local)", cfg.Table))
	}
	if cfg.Priority < 1 || cfg.Priority+BlockSize > 32766 {
		errs = append(errs, fmt.Errorf("autoroute: priority block %d–%d must lie within 1–32765, before the main table's rule", cfg.Priority, cfg.Priority+BlockSize-1))
	}
	if cfg.Mark == 0 {
		errs = append(errs, errors.New("autoroute: the gateway's sockets need a non-zero mark to skip the capture"))
	}
	if cfg.TUN == "" {
		errs = append(errs, errors.New("autoroute: no TUN name"))
	}
	if len(cfg.Include) == 0 {
		errs = append(errs, errors.New("autoroute: nothing to capture (no include prefix)"))
	}
	return errors.Join(errs...)
}

func (p *Plan) addRules(cfg Config, v6 bool) {
	end := cfg.Priority + offEnd
	jump := func(off int, why string) Rule {
		return Rule{IPv6: v6, Priority: cfg.Priority + off, Action: Goto, Table: cfg.Table, Goto: end, Why: why}
	}
	r := jump(offOwnMark, "the gateway's own sockets are never captured (no loops)")
	r.Mark = cfg.Mark
	p.Rules = append(p.Rules, r)
	for _, u := range cfg.ExcludeUID {
		r := jump(offExcludeUID, "tun.exclude_uid")
		r.UIDRange = &u
		p.Rules = append(p.Rules, r)
	}
	for _, n := range neverCaptured(cfg, v6) {
		r := jump(offNever, n.Why)
		r.Dst = n.Prefix
		p.Rules = append(p.Rules, r)
	}
	lookup := func(off int, why string) Rule {
		return Rule{IPv6: v6, Priority: cfg.Priority + off, Action: Lookup, Table: cfg.Table, Why: why}
	}
	if cfg.Strict {
		for _, proto := range []string{"udp", "tcp"} {
			for _, u := range uidSelectors(cfg.IncludeUID) {
				r := lookup(offStrictDNS, "strict_route: DNS to any server goes into the TUN")
				r.IPProto, r.Dport, r.UIDRange = proto, 53, u
				p.Rules = append(p.Rules, r)
			}
		}
	}
	for _, x := range excluded(cfg, v6) {
		r := jump(offExclude, x.Why)
		r.Dst = x.Prefix
		p.Rules = append(p.Rules, r)
	}
	for _, u := range uidSelectors(cfg.IncludeUID) {
		why := ""
		if u != nil {
			why = ", tun.include_uid"
		}
		for _, src := range captureSources(cfg, v6) {
			r := lookup(offCapture, src.Why+why)
			r.UIDRange, r.Src = u, src.Prefix
			p.Rules = append(p.Rules, r)
		}
	}
	if v6 {
		p.addCapture6(cfg, jump, lookup)
	}
	p.Rules = append(p.Rules, Rule{IPv6: v6, Priority: end, Action: Nop, Table: cfg.Table,
		Why: "end of the block: the host's other rules, then main"})
}

// addCapture6 adds what IPv6 needs besides the rules by source: IPv6 rules
// with a source match only lookups that have one (source selection comes
// after a new socket's first lookup), so a new socket is captured by a rule
// without a source, once the flows from local addresses other than the
// TUN's have left the block.
func (p *Plan) addCapture6(cfg Config, jump, lookup func(int, string) Rule) {
	for _, half := range []string{"::/1", "8000::/1"} {
		r := jump(offOtherSource, "not captured: a reply from another local address (port forwarding, ssh to the machine)")
		r.Src = netip.MustParsePrefix(half)
		p.Rules = append(p.Rules, r)
	}
	for _, u := range uidSelectors(cfg.IncludeUID) {
		why := "the capture: new sockets"
		if u != nil {
			why += ", tun.include_uid"
		}
		r := lookup(offCaptureNew6, why)
		r.UIDRange = u
		p.Rules = append(p.Rules, r)
	}
}

// captureSources are the source addresses the capture matches: the TUN's
// own (the later lookups of a captured flow) and, for IPv4, none yet (a new
// socket's first lookup, which then picks the TUN's address as its source;
// IPv6 has its own rule for those, see addCapture6). A packet from any other
// local address, such as the reply of a connection that came in over
// another interface (port forwarding, ssh to the machine), is not captured.
func captureSources(cfg Config, v6 bool) []Excluded {
	var out []Excluded
	if !v6 {
		out = append(out, Excluded{host(netip.IPv4Unspecified()), "the capture: new sockets"})
	}
	for _, a := range cfg.TUNAddresses {
		if a.Addr().Is6() == v6 {
			out = appendNew(out, Excluded{host(a.Addr()), "the capture: flows from the TUN's address"})
		}
	}
	return out
}

// uidSelectors is one selector per include_uid range, or a single "any".
func uidSelectors(include []UIDRange) []*UIDRange {
	if len(include) == 0 {
		return []*UIDRange{nil}
	}
	out := make([]*UIDRange, len(include))
	for i := range include {
		out[i] = &include[i]
	}
	return out
}

func neverCaptured(cfg Config, v6 bool) []Excluded {
	var out []Excluded
	for _, p := range ofFamily(loopback, v6) {
		out = append(out, Excluded{p, "loopback"})
	}
	for _, a := range cfg.TUNAddresses {
		if a.Addr().Is6() == v6 {
			out = appendNew(out, Excluded{host(a.Addr()), "the TUN's own address"})
		}
	}
	for _, a := range cfg.Upstreams {
		if a.Unmap().Is6() == v6 {
			out = appendNew(out, Excluded{host(a.Unmap()), "an upstream proxy (no loops)"})
		}
	}
	return out
}

func excluded(cfg Config, v6 bool) []Excluded {
	var out []Excluded
	for _, p := range ofFamily(cfg.Exclude, v6) {
		out = appendNew(out, Excluded{p, "tun.route_exclude"})
	}
	if cfg.ExcludePrivate {
		for _, x := range PrivatePrefixes() {
			if x.Prefix.Addr().Is6() == v6 {
				out = appendNew(out, Excluded{x.Prefix, "tun.exclude_private: " + x.Why})
			}
		}
	}
	return out
}

func appendNew(list []Excluded, x Excluded) []Excluded {
	if slices.ContainsFunc(list, func(y Excluded) bool { return y.Prefix == x.Prefix }) {
		return list
	}
	return append(list, x)
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func ofFamily(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

// String prints the plan as the ip commands that would install it, each
// with its reason.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# rules: priorities %d–%d, marked proto %d\n", p.Priority, p.Priority+BlockSize-1, Protocol)
	for _, r := range p.Rules {
		fmt.Fprintf(&b, "%-80s # %s\n", r.command(), r.Why)
	}
	fmt.Fprintf(&b, "# routes: table %d, marked proto %d\n", p.Table, Protocol)
	for _, r := range p.Routes {
		fmt.Fprintf(&b, "%-80s # %s\n", r.command(p.TUN, p.Table), r.Why)
	}
	return b.String()
}

func (r *Rule) command() string {
	fam := "-4"
	if r.IPv6 {
		fam = "-6"
	}
	s := fmt.Sprintf("ip %s rule add priority %d", fam, r.Priority)
	if r.Mark != 0 {
		s += fmt.Sprintf(" fwmark %#x", r.Mark)
	}
	if r.Src.IsValid() {
		s += " from " + r.Src.String()
	}
	if r.Dst.IsValid() {
		s += " to " + r.Dst.String()
	}
	if r.UIDRange != nil {
		s += " uidrange " + r.UIDRange.String()
	}
	if r.IPProto != "" {
		s += fmt.Sprintf(" ipproto %s dport %d", r.IPProto, r.Dport)
	}
	switch r.Action {
	case Goto:
		s += fmt.Sprintf(" goto %d table %d", r.Goto, r.Table)
	case Nop:
		s += fmt.Sprintf(" nop table %d", r.Table)
	default:
		s += fmt.Sprintf(" lookup %d", r.Table)
	}
	return s + fmt.Sprintf(" protocol %d", Protocol)
}

func (r *Route) command(tun string, table int) string {
	fam := "-4"
	if r.Dst.Addr().Is6() {
		fam = "-6"
	}
	if r.Unreachable {
		return fmt.Sprintf("ip %s route add unreachable %s table %d metric %d protocol %d", fam, r.Dst, table, r.Metric, Protocol)
	}
	return fmt.Sprintf("ip %s route add %s dev %s table %d protocol %d", fam, r.Dst, tun, table, Protocol)
}
