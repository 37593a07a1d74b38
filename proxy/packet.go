package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// PacketDialer is implemented by Dialers that can carry a full-cone UDP
// session (NATFullCone): one upstream for all the destinations of one app
// socket.
type PacketDialer interface {
	// ListenPacket opens the upstream of one session. unreachable, when
	// not nil, is called (from any goroutine) with each destination that
	// answered a datagram with an ICMP port unreachable, where the
	// upstream can tell.
	ListenPacket(ctx context.Context, unreachable func(dst netip.AddrPort)) (PacketUpstream, error)
}

// Destination is where a PacketUpstream sends: an address, or a name the
// upstream proxy resolves (Addr invalid then). Name is the name Addr was
// resolved from, if any.
type Destination struct {
	Addr netip.AddrPort
	Name string
	Port uint16
}

func (d Destination) String() string {
	if d.Addr.IsValid() {
		return d.Addr.String()
	}
	return net.JoinHostPort(d.Name, fmt.Sprint(d.Port))
}

// PacketUpstream is the upstream of one full-cone UDP session: an
// unconnected datagram socket, or a SOCKS5 UDP association. WriteTo may be
// called concurrently with ReadFrom and with itself; Close unblocks both.
type PacketUpstream interface {
	// Resolve turns address (host:port, the flow's target) into a
	// Destination: a direct upstream looks names up, a proxy keeps them
	// for the proxy to resolve.
	Resolve(ctx context.Context, address string) (Destination, error)
	// WriteTo sends b as one datagram to d.
	WriteTo(b []byte, d Destination) error
	// ReadFrom reads one datagram and the remote address it came from. A
	// datagram the upstream had to discard is reported as an error
	// wrapping ErrDatagramDropped; the next ReadFrom goes on. Other
	// errors end the upstream.
	ReadFrom(b []byte) (int, netip.AddrPort, error)
	// LocalAddr is the session's address as remotes see it, when known.
	LocalAddr() net.Addr
	Close() error
}

// ErrDatagramDropped is wrapped by the errors of PacketUpstream.ReadFrom
// for one discarded datagram (a SOCKS5 fragment, a malformed header).
var ErrDatagramDropped = errors.New("datagram dropped")

// droppedError is one discarded datagram and why.
type droppedError struct {
	reason string // "fragment", "malformed"
	detail string
}

func (e *droppedError) Error() string {
	return fmt.Sprintf("%s: %s (%s)", ErrDatagramDropped, e.detail, e.reason)
}
func (e *droppedError) Unwrap() error { return ErrDatagramDropped }

// ListenPacket implements PacketDialer: an unconnected UDP socket on all
// addresses (both families), marked and bound as the Dialer's options
// say, that reports ICMP port unreachables by destination (IP_RECVERR on
// Linux; elsewhere unreachable is never called).
func (d *direct) ListenPacket(ctx context.Context, unreachable func(netip.AddrPort)) (PacketUpstream, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if d.opts.Fwmark != 0 || d.opts.BindInterface != "" {
			if err := controlSocket(c, d.opts); err != nil {
				return err
			}
		}
		return setRecvErr(c)
	}}
	pc, err := lc.ListenPacket(ctx, "udp", ":0")
	if err != nil {
		return nil, fmt.Errorf("proxy: direct: udp socket: %w", err)
	}
	uc := pc.(*net.UDPConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("proxy: direct: udp socket: %w", err)
	}
	return &directPacket{c: uc, rc: rc, res: d.d.Resolver, unreachable: unreachable}, nil
}

// directPacket is a direct PacketUpstream.
type directPacket struct {
	c           *net.UDPConn
	rc          syscall.RawConn
	res         *net.Resolver
	unreachable func(netip.AddrPort)
}

// Resolve implements PacketUpstream: an address is taken as it is, a
// name looked up with the Dialer's resolver (the first address).
func (u *directPacket) Resolve(ctx context.Context, address string) (Destination, error) {
	host, port, err := splitHostPort(address)
	if err != nil {
		return Destination{}, fmt.Errorf("proxy: direct: %q: %w", address, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return Destination{Addr: netip.AddrPortFrom(ip.Unmap().WithZone(""), port), Port: port}, nil
	}
	res := u.res
	if res == nil {
		res = net.DefaultResolver
	}
	ips, err := res.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return Destination{}, fmt.Errorf("proxy: direct: resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return Destination{}, fmt.Errorf("proxy: direct: resolve %s: no address", host)
	}
	return Destination{Addr: netip.AddrPortFrom(ips[0].Unmap(), port), Name: host, Port: port}, nil
}

// WriteTo implements PacketUpstream. A port unreachable still pending
// from an earlier datagram fails a send once on Linux; it is reported to
// unreachable and the send made again.
func (u *directPacket) WriteTo(b []byte, d Destination) error {
	if !d.Addr.IsValid() {
		return fmt.Errorf("proxy: direct: %s is not resolved", d)
	}
	_, err := u.c.WriteToUDPAddrPort(b, d.Addr)
	if errors.Is(err, syscall.ECONNREFUSED) {
		u.drainErrors()
		_, err = u.c.WriteToUDPAddrPort(b, d.Addr)
	}
	return err
}

// ReadFrom implements PacketUpstream.
func (u *directPacket) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	for {
		n, from, err := u.c.ReadFromUDPAddrPort(b)
		if errors.Is(err, syscall.ECONNREFUSED) {
			u.drainErrors()
			continue
		}
		return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
	}
}

func (u *directPacket) LocalAddr() net.Addr { return u.c.LocalAddr() }
func (u *directPacket) Close() error        { return u.c.Close() }
