package gvisor

import (
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tungate/tungate/stack"
)

// toAddr converts a gVisor address; an address of another length (never
// produced for IPv4 or IPv6 traffic) becomes the zero Addr.
func toAddr(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}

// flowID names a gVisor transport endpoint as the app sees it: gVisor's
// "remote" is the app, its "local" the destination the app addressed.
func flowID(id gvstack.TransportEndpointID) stack.FlowID {
	return stack.FlowID{
		Src: netip.AddrPortFrom(toAddr(id.RemoteAddress), id.RemotePort),
		Dst: netip.AddrPortFrom(toAddr(id.LocalAddress), id.LocalPort),
	}
}

// tcpAddr and udpAddr build the net.Addr values Conns report.
func tcpAddr(ap netip.AddrPort) net.Addr { return net.TCPAddrFromAddrPort(ap) }
func udpAddr(ap netip.AddrPort) net.Addr { return net.UDPAddrFromAddrPort(ap) }
