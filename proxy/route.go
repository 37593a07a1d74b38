package proxy

import (
	"fmt"
	"time"

	"github.com/tungate/tungate/stack"
)

// Action is what a Route does with a flow.
type Action uint8

const (
	// ActionDial relays the flow through Route.Dialer.
	ActionDial Action = iota
	// ActionReject refuses it: a RST to a TCP app's SYN (connection
	// refused at once); a UDP flow is dropped, with an ICMP port
	// unreachable when the stack can send one (stack.Refuser).
	ActionReject
	// ActionDrop answers nothing: the SYN or datagram is dropped and the
	// app's own timeouts apply.
	ActionDrop
)

// Route is the outbound chosen for one flow.
type Route struct {
	// Outbound names it, for logs and traces.
	Outbound string
	// Rule is the index of the rule that chose it, -1 for the final
	// outbound or when there are no rules.
	Rule   int
	Action Action
	// Dialer opens the upstream for ActionDial.
	Dialer Dialer
	// Address, when set, is what the dialer connects to instead of the
	// flow's destination: "name:port" for a fake address, so that a
	// proxy resolves the name itself.
	Address string
	// Domain is the flow's name when the router knows it (a fake IP's,
	// a sniffed one), for the connections API.
	Domain string
	// ConnectTimeout, when positive, bounds this flow's dial instead of
	// Options.ConnectTimeout (a per-outbound timeout).
	ConnectTimeout time.Duration
	// Sniff, when set (TCP only), asks for the flow's first bytes before
	// it is routed: the proxy completes the app's handshake, reads what the
	// app sends first (at most SniffTimeout), and routes by the Route
	// Sniff returns for the name found there ("" when none). The other
	// fields are then unused. This gives up the faithful handshake for
	// the flow: an upstream that refuses becomes a RST after "connected".
	Sniff func(domain string) Route
}

func (r Route) String() string {
	s := fmt.Sprintf("outbound %s (rule %d)", r.Outbound, r.Rule)
	if r.Rule < 0 {
		s = fmt.Sprintf("outbound %s (final)", r.Outbound)
	}
	if r.Address != "" {
		s += " to " + r.Address
	}
	return s
}

// target is the address rt dials for the flow id.
func (rt Route) target(id stack.FlowID) string {
	if rt.Address != "" {
		return rt.Address
	}
	return id.Dst.String()
}

// Router chooses the Route of each new flow; network is "tcp" or "udp".
// It is called concurrently and must be quick.
type Router func(id stack.FlowID, network string) Route

// route returns the flow's Route: the Router's, or the dialers of Options.
func (p *Proxy) route(id stack.FlowID, network string) Route {
	if p.router != nil {
		return p.router(id, network)
	}
	d := p.dialer
	if network == "udp" {
		d = p.udpDialer
	}
	return Route{Outbound: "default", Rule: -1, Dialer: d}
}

// connectTimeoutOf is the dial timeout of rt: its own when it has one,
// else the proxy's.
func (p *Proxy) connectTimeoutOf(rt Route) time.Duration {
	if rt.ConnectTimeout > 0 {
		return rt.ConnectTimeout
	}
	return p.limits().connectTimeout
}
