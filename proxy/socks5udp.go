package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// socksUDPHeaderMax is the longest UDP request header (RFC 1928 §7):
// RSV, FRAG, ATYP, a 255-byte name with its length, the port.
const socksUDPHeaderMax = 2 + 1 + 1 + 1 + 255 + 2

// ListenPacket implements PacketDialer with a UDP association (RFC 1928
// §7): a control connection to the server carrying UDP ASSOCIATE, and a
// UDP socket (dialed with the forward Dialer, so marked and bound like
// the rest) connected to the relay address the server replied with. The
// association lives as long as the control connection: when the server
// closes it, ReadFrom fails and the session ends. Datagrams carry their
// destination in the request header, a name when the flow has one, so the
// server resolves it. The server sends no ICMP errors, so unreachable is
// never called.
func (s *socks5) ListenPacket(ctx context.Context, _ func(netip.AddrPort)) (PacketUpstream, error) {
	ctrl, err := s.forward.DialContext(ctx, "tcp", s.server)
	if err != nil {
		return nil, fmt.Errorf("proxy: socks5: connect to server %s: %w", s.server, err)
	}
	var relay string
	err = handshake(ctx, ctrl, func() error {
		if err := s.selectMethod(ctrl); err != nil {
			return err
		}
		// The address the client will send from is not known before
		// the relay is, so it is all zeros, as §7 allows.
		req, _ := socksRequest(socksCmdAssociate, "0.0.0.0:0")
		if _, err := ctrl.Write(req); err != nil {
			return fmt.Errorf("send request: %w", err)
		}
		var err error
		relay, err = readSocksReply(ctrl)
		return err
	})
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("proxy: socks5 %s: udp associate: %w", s.server, err)
	}
	relay, err = relayAddress(relay, ctrl.RemoteAddr())
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("proxy: socks5 %s: udp associate: %w", s.server, err)
	}
	uc, err := s.forward.DialContext(ctx, "udp", relay)
	if err != nil {
		ctrl.Close()
		return nil, fmt.Errorf("proxy: socks5 %s: udp relay %s: %w", s.server, relay, err)
	}
	a := &socksAssociation{ctrl: ctrl, udp: uc, done: make(chan struct{})}
	go a.watch()
	return a, nil
}

// relayAddress is where the association's datagrams go: the reply's
// BND.ADDR and BND.PORT, with the server's own address when BND.ADDR is
// unspecified (as many servers reply).
func relayAddress(bound string, server net.Addr) (string, error) {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return "", fmt.Errorf("relay address %q: %w", bound, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		ta, ok := server.(*net.TCPAddr)
		if !ok {
			return "", fmt.Errorf("relay address %s and no server address", bound)
		}
		host = ta.AddrPort().Addr().Unmap().String()
	}
	if port == "0" {
		return "", fmt.Errorf("relay address %s has no port", bound)
	}
	return net.JoinHostPort(host, port), nil
}

// socksAssociation is a SOCKS5 UDP association, a PacketUpstream.
type socksAssociation struct {
	ctrl net.Conn
	udp  net.Conn
	done chan struct{} // closed when the control connection ends

	closeOnce sync.Once
	bufs      sync.Pool // *[]byte of socksUDPHeaderMax + udpBufSize, for WriteTo
}

// watch waits for the control connection to end, then closes the
// association: the server ends it so (RFC 1928 §7), and so does Close.
func (a *socksAssociation) watch() {
	defer close(a.done)
	_, _ = io.Copy(io.Discard, a.ctrl)
	a.Close()
}

// Resolve implements PacketUpstream: names are kept for the server.
func (a *socksAssociation) Resolve(_ context.Context, address string) (Destination, error) {
	host, port, err := splitHostPort(address)
	if err != nil {
		return Destination{}, fmt.Errorf("proxy: socks5: %q: %w", address, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return Destination{Addr: netip.AddrPortFrom(ip.Unmap().WithZone(""), port), Port: port}, nil
	}
	if len(host) > 255 {
		return Destination{}, fmt.Errorf("proxy: socks5: name %q longer than 255 bytes", host)
	}
	return Destination{Name: host, Port: port}, nil
}

// WriteTo implements PacketUpstream: b behind a UDP request header (RFC
// 1928 §7, FRAG 0), as one datagram to the relay.
func (a *socksAssociation) WriteTo(b []byte, d Destination) error {
	bp, _ := a.bufs.Get().(*[]byte)
	if bp == nil {
		buf := make([]byte, socksUDPHeaderMax+udpBufSize)
		bp = &buf
	}
	defer a.bufs.Put(bp)
	h := appendSocksUDPHeader((*bp)[:0], d)
	if len(h)+len(b) > len(*bp) {
		return fmt.Errorf("proxy: socks5: %d-byte datagram too large", len(b))
	}
	msg := append(h, b...)
	_, err := a.udp.Write(msg)
	return err
}

// appendSocksUDPHeader appends RSV, FRAG 0, ATYP, DST.ADDR, DST.PORT.
func appendSocksUDPHeader(h []byte, d Destination) []byte {
	h = append(h, 0, 0, 0)
	switch {
	case !d.Addr.IsValid():
		h = append(h, socksAtypDomain, byte(len(d.Name)))
		h = append(h, d.Name...)
	case d.Addr.Addr().Is4():
		a := d.Addr.Addr().As4()
		h = append(append(h, socksAtypIPv4), a[:]...)
	default:
		a := d.Addr.Addr().As16()
		h = append(append(h, socksAtypIPv6), a[:]...)
	}
	return binary.BigEndian.AppendUint16(h, d.Port)
}

// ReadFrom implements PacketUpstream: one datagram from the relay, its
// header stripped; the source is the header's address. Fragments (FRAG ≠
// 0; reassembly is optional in RFC 1928 §7 and not done) and malformed
// headers are dropped with a *droppedError.
func (a *socksAssociation) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	n, err := a.udp.Read(b)
	if err != nil {
		select {
		case <-a.done:
			return 0, netip.AddrPort{}, fmt.Errorf("proxy: socks5: the server ended the association: %w", net.ErrClosed)
		default:
		}
		return 0, netip.AddrPort{}, err
	}
	hl, from, derr := parseSocksUDPHeader(b[:n])
	if derr != nil {
		return 0, netip.AddrPort{}, derr
	}
	return copy(b, b[hl:n]), from, nil
}

// parseSocksUDPHeader parses a UDP reply header (RFC 1928 §7) and returns
// its length and the source address it names.
func parseSocksUDPHeader(p []byte) (int, netip.AddrPort, error) {
	if len(p) < 4 {
		return 0, netip.AddrPort{}, &droppedError{reason: "malformed", detail: fmt.Sprintf("%d-byte datagram, shorter than a header", len(p))}
	}
	if p[0] != 0 || p[1] != 0 {
		return 0, netip.AddrPort{}, &droppedError{reason: "malformed", detail: "reserved bytes not zero"}
	}
	if p[2] != 0 {
		return 0, netip.AddrPort{}, &droppedError{reason: "fragment", detail: fmt.Sprintf("fragment %d", p[2])}
	}
	var ip netip.Addr
	hl := 0
	switch p[3] {
	case socksAtypIPv4:
		hl = 4 + 4 + 2
		if len(p) >= hl {
			ip = netip.AddrFrom4([4]byte(p[4:8]))
		}
	case socksAtypIPv6:
		hl = 4 + 16 + 2
		if len(p) >= hl {
			ip = netip.AddrFrom16([16]byte(p[4:20])).Unmap()
		}
	case socksAtypDomain:
		return 0, netip.AddrPort{}, &droppedError{reason: "malformed", detail: "source given as a name"}
	default:
		return 0, netip.AddrPort{}, &droppedError{reason: "malformed", detail: fmt.Sprintf("address type %#x", p[3])}
	}
	if len(p) < hl {
		return 0, netip.AddrPort{}, &droppedError{reason: "malformed", detail: "truncated address"}
	}
	return hl, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(p[hl-2:hl])), nil
}

// LocalAddr is the association's UDP socket's address.
func (a *socksAssociation) LocalAddr() net.Addr { return a.udp.LocalAddr() }

// Close ends the association: the control connection (the server drops
// the association with it) and the UDP socket.
func (a *socksAssociation) Close() error {
	a.closeOnce.Do(func() {
		a.ctrl.Close()
		a.udp.Close()
	})
	return nil
}

// dialUDP is DialContext for "udp": a connected association, one
// destination only, for symmetric sessions.
func (s *socks5) dialUDP(ctx context.Context, address string) (net.Conn, error) {
	up, err := s.ListenPacket(ctx, nil)
	if err != nil {
		return nil, err
	}
	d, err := up.Resolve(ctx, address)
	if err != nil {
		up.Close()
		return nil, err
	}
	return &socksUDPConn{a: up.(*socksAssociation), dst: d}, nil
}

// socksUDPConn is an association used for one destination, as a net.Conn.
type socksUDPConn struct {
	a   *socksAssociation
	dst Destination
}

func (c *socksUDPConn) Write(b []byte) (int, error) {
	if err := c.a.WriteTo(b, c.dst); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Read returns the next datagram; dropped ones are skipped.
func (c *socksUDPConn) Read(b []byte) (int, error) {
	for {
		n, _, err := c.a.ReadFrom(b)
		if errors.Is(err, ErrDatagramDropped) {
			continue
		}
		return n, err
	}
}

func (c *socksUDPConn) Close() error                       { return c.a.Close() }
func (c *socksUDPConn) LocalAddr() net.Addr                { return c.a.LocalAddr() }
func (c *socksUDPConn) RemoteAddr() net.Addr               { return c.a.udp.RemoteAddr() }
func (c *socksUDPConn) SetDeadline(t time.Time) error      { return c.a.udp.SetDeadline(t) }
func (c *socksUDPConn) SetReadDeadline(t time.Time) error  { return c.a.udp.SetReadDeadline(t) }
func (c *socksUDPConn) SetWriteDeadline(t time.Time) error { return c.a.udp.SetWriteDeadline(t) }
