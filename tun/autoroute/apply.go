//go:build linux

package autoroute

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// frActNop is the FR_ACT_NOP rule action (linux/fib_rules.h), which
// netlink.Rule carries in Type.
const frActNop = 3

// Field names the part of the configuration a ConflictError is about.
type Field int

const (
	FieldTable Field = iota
	FieldPriority
	FieldMark
)

// ConflictError says that the host already uses the table, priority block
// or mark of a plan for something autoroute did not add; nothing was
// installed or removed.
type ConflictError struct {
	Field Field
	Msg   string
}

func (e *ConflictError) Error() string { return "autoroute: " + e.Msg }

// Installed is what Install added; Remove takes it away again.
type Installed struct {
	h      *netlink.Handle
	rules  []*netlink.Rule
	routes []*netlink.Route
}

// Check reports a *ConflictError when the host's rules or table T are in
// the way of p: a rule with p's table, in p's priority block or with p's
// mark, or a route in p's table, that autoroute did not add. Its own rules
// and routes (stale ones, which Cleanup removes) are not in the way.
func Check(h *netlink.Handle, p *Plan, mark uint32) error {
	rules, err := listRules(h)
	if err != nil {
		return err
	}
	for _, r := range rules {
		if p.owns(&r) {
			continue
		}
		desc := describeRule(&r)
		switch {
		case r.Table == p.Table && r.Protocol == Protocol:
			// Outside the block: left by a run with another rule_priority
			// (a live one would hold the table's lock).
			return &ConflictError{FieldTable, fmt.Sprintf("table %d is used by a rule an earlier tungate run with another tun.rule_priority left behind (%s); "+
				"remove it with gateway cleanup and that priority", p.Table, desc)}
		case r.Table == p.Table:
			return &ConflictError{FieldTable, fmt.Sprintf("table %d is already used by a rule tungate did not add (%s)", p.Table, desc)}
		case r.Priority >= p.Priority && r.Priority < p.Priority+BlockSize:
			by := "a rule tungate did not add"
			if r.Protocol == Protocol {
				by = fmt.Sprintf("another tungate's rule (table %d)", r.Table)
			}
			return &ConflictError{FieldPriority, fmt.Sprintf("priorities %d–%d are needed, and %d is already used by %s (%s)",
				p.Priority, p.Priority+BlockSize-1, r.Priority, by, desc)}
		case mark != 0 && r.Mark == mark && r.Protocol != Protocol:
			// Another tungate's mark rule means what ours means: its
			// sockets skip its capture. Anyone else's is a collision.
			return &ConflictError{FieldMark, fmt.Sprintf("mark %#x is already used by a rule tungate did not add (%s)", mark, desc)}
		}
	}
	routes, err := tableRoutes(h, p.Table)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Protocol != Protocol {
			return &ConflictError{FieldTable, fmt.Sprintf("table %d already holds a route tungate did not add (%s)", p.Table, describeRoute(&r))}
		}
	}
	return nil
}

// Cleanup removes the rules and routes of table/priority that autoroute
// added and nobody removed: those of a run that was killed. It removes
// nothing else. It returns how many it removed.
func Cleanup(h *netlink.Handle, table, priority int) (int, error) {
	p := &Plan{Table: table, Priority: priority}
	rules, err := listRules(h)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for i := range rules {
		if !p.owns(&rules[i]) {
			continue
		}
		if err := h.RuleDel(&rules[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("autoroute: delete rule %s: %w", describeRule(&rules[i]), err))
			continue
		}
		n++
	}
	routes, err := tableRoutes(h, table)
	if err != nil {
		return n, errors.Join(append(errs, err)...)
	}
	for i := range routes {
		if routes[i].Protocol != Protocol {
			continue
		}
		if err := h.RouteDel(&routes[i]); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("autoroute: delete route %s: %w", describeRoute(&routes[i]), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Install adds p's routes (via the TUN with index tunIndex), then its
// rules. If any step fails, what it had added is removed again.
func Install(h *netlink.Handle, p *Plan, tunIndex int) (*Installed, error) {
	in := &Installed{h: h}
	for i := range p.Routes {
		r := p.Routes[i].netlink(p.Table, tunIndex)
		if err := h.RouteAdd(r); err != nil {
			err = fmt.Errorf("autoroute: %s: %w", p.Routes[i].command(p.TUN, p.Table), err)
			return nil, errors.Join(err, in.Remove())
		}
		in.routes = append(in.routes, r)
	}
	for i := range p.Rules {
		r := p.Rules[i].netlink()
		if err := h.RuleAdd(r); err != nil {
			err = fmt.Errorf("autoroute: %s: %w", p.Rules[i].command(), err)
			return nil, errors.Join(err, in.Remove())
		}
		in.rules = append(in.rules, r)
	}
	return in, nil
}

// Remove deletes what Install added, rules first so that nothing is
// routed to a table being emptied. A rule or route already gone (the
// kernel drops routes through a TUN that disappeared) is not an error.
// Remove is idempotent.
func (in *Installed) Remove() error {
	var errs []error
	for i := len(in.rules) - 1; i >= 0; i-- {
		if err := in.h.RuleDel(in.rules[i]); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("autoroute: delete rule %s: %w", describeRule(in.rules[i]), err))
		}
	}
	for i := len(in.routes) - 1; i >= 0; i-- {
		if err := in.h.RouteDel(in.routes[i]); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("autoroute: delete route %s: %w", describeRoute(in.routes[i]), err))
		}
	}
	in.rules, in.routes = nil, nil
	return errors.Join(errs...)
}

func gone(err error) bool { return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) }

// owns reports whether r is one of the rules autoroute adds for p's table
// and priority block.
func (p *Plan) owns(r *netlink.Rule) bool {
	return r.Protocol == Protocol && r.Table == p.Table &&
		r.Priority >= p.Priority && r.Priority < p.Priority+BlockSize
}

func listRules(h *netlink.Handle) ([]netlink.Rule, error) {
	var all []netlink.Rule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := h.RuleList(fam)
		if err != nil {
			return nil, fmt.Errorf("autoroute: list rules: %w", err)
		}
		all = append(all, rules...)
	}
	return all, nil
}

func tableRoutes(h *netlink.Handle, table int) ([]netlink.Route, error) {
	var all []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("autoroute: list table %d: %w", table, err)
		}
		all = append(all, routes...)
	}
	return all, nil
}

func (r *Rule) netlink() *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = netlink.FAMILY_V4
	if r.IPv6 {
		nr.Family = netlink.FAMILY_V6
	}
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Protocol = Protocol
	nr.Mark = r.Mark
	if r.Src.IsValid() {
		nr.Src = ipNet(r.Src)
	}
	if r.Dst.IsValid() {
		nr.Dst = ipNet(r.Dst)
	}
	if r.UIDRange != nil {
		nr.UIDRange = netlink.NewRuleUIDRange(r.UIDRange.Start, r.UIDRange.End)
	}
	switch r.IPProto {
	case "udp":
		nr.IPProto = unix.IPPROTO_UDP
	case "tcp":
		nr.IPProto = unix.IPPROTO_TCP
	}
	if r.Dport != 0 {
		nr.Dport = netlink.NewRulePortRange(r.Dport, r.Dport)
	}
	switch r.Action {
	case Goto:
		nr.Goto = r.Goto
	case Nop:
		nr.Type = frActNop
	}
	return nr
}

func (r *Route) netlink(table, tunIndex int) *netlink.Route {
	nr := &netlink.Route{
		Dst:      ipNet(r.Dst),
		Table:    table,
		Protocol: Protocol,
		Priority: int(r.Metric),
	}
	if r.Dst.Addr().Is6() {
		nr.Family = netlink.FAMILY_V6
	} else {
		nr.Family = netlink.FAMILY_V4
	}
	if r.Unreachable {
		nr.Type = unix.RTN_UNREACHABLE
		return nr
	}
	nr.LinkIndex = tunIndex
	if !r.Dst.Addr().Is6() {
		nr.Scope = netlink.SCOPE_LINK // as `ip route add P dev tun0`: on-link
	}
	return nr
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func describeRule(r *netlink.Rule) string {
	s := fmt.Sprintf("priority %d", r.Priority)
	if r.Dst != nil {
		s += " to " + r.Dst.String()
	}
	if r.Mark != 0 {
		s += fmt.Sprintf(" fwmark %#x", r.Mark)
	}
	if r.Goto >= 0 {
		s += fmt.Sprintf(" goto %d", r.Goto)
	}
	if r.Table != 0 {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	if r.Protocol != 0 {
		s += fmt.Sprintf(" proto %d", r.Protocol)
	}
	return s
}

func describeRoute(r *netlink.Route) string {
	dst := "default"
	if r.Dst != nil {
		dst = r.Dst.String()
	}
	return fmt.Sprintf("%s table %d proto %d", dst, r.Table, r.Protocol)
}
