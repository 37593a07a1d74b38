package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tungate/tungate/tun/autoroute"
)

// Limits of the auto_route keys.
const (
	maxRouteTable = 1<<31 - 1
	// The block of rules must end before the main table's rule at 32766.
	maxRulePriority = 32765 - autoroute.BlockSize + 1
)

// ParseUIDRange reads tun.include_uid / tun.exclude_uid items: a uid
// ("1000") or an inclusive range ("1000-1999").
func ParseUIDRange(s string) (autoroute.UIDRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	start, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 32)
	if err != nil {
		return autoroute.UIDRange{}, fmt.Errorf("%q is not a uid or a uid range (1000, 1000-1999)", s)
	}
	end := start
	if isRange {
		if end, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 32); err != nil {
			return autoroute.UIDRange{}, fmt.Errorf("%q is not a uid or a uid range (1000, 1000-1999)", s)
		}
	}
	if start > end {
		return autoroute.UIDRange{}, fmt.Errorf("%q starts above its end", s)
	}
	return autoroute.UIDRange{Start: uint32(start), End: uint32(end)}, nil
}

// UIDRanges parses a validated list of uid items.
func UIDRanges(items []string) []autoroute.UIDRange {
	out := make([]autoroute.UIDRange, 0, len(items))
	for _, s := range items {
		if r, err := ParseUIDRange(s); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// SocketMark is the SO_MARK of the gateway's own sockets: upstream.fwmark,
// or under auto_route tun.route_mark when upstream.fwmark is 0.
func (c *Config) SocketMark() uint32 {
	if c.Upstream.Fwmark == 0 && c.TUN.AutoRoute {
		return c.TUN.RouteMark
	}
	return c.Upstream.Fwmark
}

// MarkKey is the key SocketMark comes from, for messages.
func (c *Config) MarkKey() string {
	if c.Upstream.Fwmark == 0 && c.TUN.AutoRoute {
		return "tun.route_mark"
	}
	return "upstream.fwmark"
}

func (t *TUN) validateAutoRoute(ps *problems, up *Upstream) {
	checkRange(ps, "tun.route_table", t.RouteTable, 1, maxRouteTable)
	if slices.Contains([]int{253, 254, 255}, t.RouteTable) {
		ps.add("tun.route_table", "%d is reserved (253 default, 254 main, 255 local)", t.RouteTable)
	}
	checkRange(ps, "tun.rule_priority", t.RulePriority, 1, maxRulePriority)
	if t.AutoRoute && up.Fwmark == 0 && t.RouteMark == 0 {
		ps.add("tun.route_mark", "must not be 0 with tun.auto_route and upstream.fwmark 0: the gateway's own sockets need a mark to skip the capture")
	}
	for i, p := range t.RouteInclude {
		key := fmt.Sprintf("tun.route_include[%d]", i)
		checkRoute(ps, key, p)
		checkDuplicate(ps, key, "tun.route_include", t.RouteInclude[:i], p)
	}
	if t.AutoRoute && len(t.RouteInclude) == 0 {
		ps.add("tun.route_include", "is empty, so tun.auto_route would capture nothing (the default is 0.0.0.0/0, ::/0)")
	}
	for i, p := range t.RouteExclude {
		key := fmt.Sprintf("tun.route_exclude[%d]", i)
		checkRoute(ps, key, p)
		checkDuplicate(ps, key, "tun.route_exclude", t.RouteExclude[:i], p)
	}
	t.checkIncludeNotExcluded(ps)
	if t.AutoRoute {
		t.checkIncludeHasSource(ps)
	}
	include := t.checkUIDs(ps, "tun.include_uid", t.IncludeUID)
	exclude := t.checkUIDs(ps, "tun.exclude_uid", t.ExcludeUID)
	for i, a := range include {
		for j, b := range exclude {
			if a.Start <= b.End && b.Start <= a.End {
				ps.add(fmt.Sprintf("tun.include_uid[%d]", i), "%s overlaps tun.exclude_uid[%d] (%s)", a, j, b)
			}
		}
	}
	if !t.AutoRoute {
		t.checkNeedsAutoRoute(ps)
	}
}

// checkIncludeNotExcluded rejects an included prefix that lies wholly
// inside an excluded one: it would capture nothing, which is never meant.
func (t *TUN) checkIncludeNotExcluded(ps *problems) {
	type excl struct {
		p   netip.Prefix
		key string
	}
	var excludes []excl
	for j, p := range t.RouteExclude {
		excludes = append(excludes, excl{p, fmt.Sprintf("tun.route_exclude[%d]", j)})
	}
	if t.ExcludePrivate {
		for _, x := range autoroute.PrivatePrefixes() {
			excludes = append(excludes, excl{x.Prefix, "tun.exclude_private (" + x.Why + ")"})
		}
	}
	for i, in := range t.RouteInclude {
		for _, x := range excludes {
			if in.IsValid() && x.p.IsValid() && x.p.Bits() <= in.Bits() && x.p.Contains(in.Addr()) {
				hint := "remove one of them"
				if strings.HasPrefix(x.key, "tun.exclude_private") {
					hint = "set tun.exclude_private: false to capture private ranges"
				}
				ps.add(fmt.Sprintf("tun.route_include[%d]", i), "%s lies inside %s, excluded by %s, so it would capture nothing; %s", in, x.p, x.key, hint)
				break
			}
		}
	}
}

// checkIncludeHasSource rejects capturing a family the TUN has no address
// of: the captured sockets would take another interface's address as their
// source and leave by it after the first packet.
func (t *TUN) checkIncludeHasSource(ps *problems) {
	for i, in := range t.RouteInclude {
		v6 := in.Addr().Is6()
		if !in.IsValid() || slices.ContainsFunc(t.Addresses, func(a netip.Prefix) bool { return a.Addr().Is6() == v6 }) {
			continue
		}
		fam := "IPv4"
		if v6 {
			fam = "IPv6"
		}
		ps.add(fmt.Sprintf("tun.route_include[%d]", i), "%s is %s but tun.addresses has no %s address to be the captured flows' source; add one or remove the prefix", in, fam, fam)
	}
}

func (t *TUN) checkUIDs(ps *problems, key string, items []string) []autoroute.UIDRange {
	var out []autoroute.UIDRange
	for i, s := range items {
		r, err := ParseUIDRange(s)
		if err != nil {
			ps.add(fmt.Sprintf("%s[%d]", key, i), "%v", err)
			continue
		}
		out = append(out, r)
	}
	return out
}

// checkNeedsAutoRoute rejects auto_route settings given without
// auto_route: they would silently do nothing.
func (t *TUN) checkNeedsAutoRoute(ps *problems) {
	const why = "is set but tun.auto_route is false, so it would do nothing; set tun.auto_route: true (--auto-route)"
	if t.StrictRoute {
		ps.add("tun.strict_route", why)
	}
	if len(t.RouteExclude) > 0 {
		ps.add("tun.route_exclude", why)
	}
	if len(t.IncludeUID) > 0 {
		ps.add("tun.include_uid", why)
	}
	if len(t.ExcludeUID) > 0 {
		ps.add("tun.exclude_uid", why)
	}
}
