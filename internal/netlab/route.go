package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteViaTUN makes C send every packet without SO_MARK Fwmark into the TUN
// device tunName: it waits (polling, bounded by ctx) until the link exists
// in C and is administratively up, then installs default routes (IPv4 and
// IPv6) to it in Table and the rules "not fwmark Fwmark lookup Table" at
// RulePriority. Traffic to C's own addresses still stays local (the local
// table's rule comes first), and marked sockets keep using the main table,
// that is the veth. Calling it again re-points the routes and keeps the
// rules.
func (l *Lab) RouteViaTUN(ctx context.Context, tunName string) error {
	link, err := l.waitTUN(ctx, tunName)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.errIfClosedLocked(); err != nil {
		return err
	}
	h := l.client.nl
	for _, r := range tunRoutes(link.Attrs().Index) {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("netlab: %s: route %s dev %s table %d: %w", l.client.Name, r.Dst, tunName, Table, err)
		}
	}
	for _, r := range bypassRules() {
		if err := h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("netlab: %s: add rule %s: %w", l.client.Name, r, err)
		}
	}
	l.log.Debug("netlab: client routed via TUN", "ns", l.client.Name, "tun", tunName)
	return nil
}

// Unroute removes what RouteViaTUN installed, so C talks to S straight over
// the veth again (the kernel baseline). Removing what is not there is not an
// error.
func (l *Lab) Unroute() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.errIfClosedLocked(); err != nil {
		return err
	}
	h := l.client.nl
	for _, r := range bypassRules() {
		if err := h.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("netlab: %s: delete rule %s: %w", l.client.Name, r, err)
		}
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if err := l.flushTable(family); err != nil {
			return err
		}
	}
	l.log.Debug("netlab: client routed directly", "ns", l.client.Name)
	return nil
}

func (l *Lab) flushTable(family int) error {
	h := l.client.nl
	routes, err := h.RouteListFiltered(family, &netlink.Route{Table: Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("netlab: %s: list table %d: %w", l.client.Name, Table, err)
	}
	for i := range routes {
		err := h.RouteDel(&routes[i])
		if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("netlab: %s: delete route %s table %d: %w", l.client.Name, routes[i].Dst, Table, err)
		}
	}
	return nil
}

// waitTUN polls C until the link exists and is up.
func (l *Lab) waitTUN(ctx context.Context, name string) (netlink.Link, error) {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		link, up, err := l.tunUp(name)
		if err != nil || up {
			return link, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("netlab: %s: waiting for %s to exist and be up: %w", l.client.Name, name, ctx.Err())
		case <-ticker.C:
		}
	}
}

// tunUp looks the link up under mu, so that the netlink handle is never
// used after Close.
func (l *Lab) tunUp(name string) (netlink.Link, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.errIfClosedLocked(); err != nil {
		return nil, false, err
	}
	link, err := l.client.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("netlab: %s: find %s: %w", l.client.Name, name, err)
	}
	return link, link.Attrs().Flags&net.FlagUp != 0, nil
}

func tunRoutes(linkIndex int) []*netlink.Route {
	return []*netlink.Route{
		{
			LinkIndex: linkIndex,
			Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Table:     Table,
			Scope:     netlink.SCOPE_LINK,
		},
		{
			LinkIndex: linkIndex,
			Dst:       &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
			Table:     Table,
		},
	}
}

func bypassRules() []*netlink.Rule {
	var rules []*netlink.Rule
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		r := netlink.NewRule()
		r.Family = family
		r.Priority = RulePriority
		r.Table = Table
		r.Mark = Fwmark
		mask := uint32(0xffffffff)
		r.Mask = &mask
		r.Invert = true
		rules = append(rules, r)
	}
	return rules
}

// addDefaultRoutes installs Options.DefaultRoute's routes in C's main table.
// It runs after wire has waited for the veth: both families refuse a
// gateway no route leads to (ENETUNREACH, EHOSTUNREACH for IPv6), and the
// veth's connected routes exist only while it is up. For IPv6 the gateway is
// S's global address on the connected /64, which works like a link-local
// one would.
func (l *Lab) addDefaultRoutes() error {
	link, err := l.client.nl.LinkByName(l.vethC)
	if err != nil {
		return fmt.Errorf("netlab: %s: find %s: %w", l.client.Name, l.vethC, err)
	}
	for _, r := range defaultRoutes(link.Attrs().Index) {
		if err := l.client.nl.RouteAdd(r); err != nil {
			return fmt.Errorf("netlab: %s: route default via %s dev %s: %w", l.client.Name, r.Gw, l.vethC, err)
		}
	}
	l.log.Debug("netlab: default routes via S", "ns", l.client.Name, "dev", l.vethC)
	return nil
}

func defaultRoutes(linkIndex int) []*netlink.Route {
	return []*netlink.Route{
		{
			LinkIndex: linkIndex,
			Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			Gw:        net.ParseIP(ServerAddr4).To4(),
		},
		{
			LinkIndex: linkIndex,
			Dst:       &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
			Gw:        net.ParseIP(ServerAddr6),
		},
	}
}
