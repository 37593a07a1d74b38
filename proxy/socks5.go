package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// SOCKS version 5 wire values (RFC 1928, RFC 1929).
const (
	socksVersion        = 0x05
	socksAuthNone       = 0x00
	socksAuthPassword   = 0x02
	socksAuthNoMethod   = 0xff
	socksCmdConnect     = 0x01
	socksCmdAssociate   = 0x03
	socksAtypIPv4       = 0x01
	socksAtypDomain     = 0x03
	socksAtypIPv6       = 0x04
	socksPasswordVer    = 0x01
	socksReplySucceeded = 0x00
)

// socks5 is a SOCKS5 CONNECT client (RFC 1928) with optional
// username/password authentication (RFC 1929).
type socks5 struct {
	server   string
	user     string
	password string
	forward  Dialer
}

// NewSOCKS5 returns a Dialer that connects through the SOCKS5 proxy at
// server (host:port), reached with forward (nil means NewDirect with no
// options). With a non-empty user it offers username/password
// authentication besides none. TCP networks use CONNECT; UDP networks
// (and ListenPacket, for full-cone sessions) a UDP ASSOCIATE. The
// destination is sent as an IPv4 or IPv6 address when address holds one,
// otherwise as a domain name the proxy resolves.
//
// A failure reply maps to the errno a kernel connect would report:
// "connection refused" (0x05) satisfies errors.Is(err,
// syscall.ECONNREFUSED), "network unreachable" ENETUNREACH, "host
// unreachable" EHOSTUNREACH, "TTL expired" ETIMEDOUT, "not allowed by
// ruleset" EACCES.
func NewSOCKS5(server, user, password string, forward Dialer) Dialer {
	if forward == nil {
		forward = NewDirect(DirectOptions{})
	}
	return &socks5{server: server, user: user, password: password, forward: forward}
}

func (s *socks5) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if network == "udp" || network == "udp4" || network == "udp6" {
		return s.dialUDP(ctx, address)
	}
	if !isTCP(network) {
		return nil, fmt.Errorf("proxy: socks5: network %q: %w", network, errors.ErrUnsupported)
	}
	req, err := socksConnectRequest(address)
	if err != nil {
		return nil, fmt.Errorf("proxy: socks5: destination %q: %w", address, err)
	}
	conn, err := s.forward.DialContext(ctx, "tcp", s.server)
	if err != nil {
		return nil, fmt.Errorf("proxy: socks5: connect to server %s: %w", s.server, err)
	}
	err = handshake(ctx, conn, func() error { return s.negotiate(conn, req) })
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy: socks5 %s: connect to %s: %w", s.server, address, err)
	}
	return conn, nil
}

// negotiate runs method selection, authentication and the CONNECT
// request on conn. It reads exactly the server's replies, so whatever the
// destination sends next is left unread in conn.
func (s *socks5) negotiate(conn net.Conn, req []byte) error {
	if err := s.selectMethod(conn); err != nil {
		return err
	}
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("send request: %w", err)
	}
	_, err := readSocksReply(conn)
	return err
}

// selectMethod offers the authentication methods (RFC 1928 §3) and runs
// the one the server picks.
func (s *socks5) selectMethod(conn net.Conn) error {
	greeting := []byte{socksVersion, 1, socksAuthNone}
	if s.user != "" {
		greeting = []byte{socksVersion, 2, socksAuthNone, socksAuthPassword}
	}
	if _, err := conn.Write(greeting); err != nil {
		return fmt.Errorf("send greeting: %w", err)
	}
	var resp [2]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		return fmt.Errorf("read method selection: %w", err)
	}
	if resp[0] != socksVersion {
		return fmt.Errorf("server speaks version %d, not 5", resp[0])
	}
	switch resp[1] {
	case socksAuthNone:
		return nil
	case socksAuthPassword:
		if s.user == "" {
			return errors.New("server demands username/password authentication but none is configured")
		}
		return s.authenticate(conn)
	case socksAuthNoMethod:
		return errors.New("server accepts none of the offered authentication methods")
	default:
		return fmt.Errorf("server chose authentication method %#x, which was not offered", resp[1])
	}
}

// authenticate runs the username/password sub-negotiation (RFC 1929 §2).
func (s *socks5) authenticate(conn net.Conn) error {
	if len(s.user) > 255 || len(s.password) > 255 {
		return errors.New("username and password must be at most 255 bytes each")
	}
	msg := make([]byte, 0, 3+len(s.user)+len(s.password))
	msg = append(msg, socksPasswordVer, byte(len(s.user)))
	msg = append(msg, s.user...)
	msg = append(msg, byte(len(s.password)))
	msg = append(msg, s.password...)
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("send credentials: %w", err)
	}
	var resp [2]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		return fmt.Errorf("read authentication status: %w", err)
	}
	if resp[1] != 0 {
		// RFC 1929: any non-zero status is a failure and the server
		// closes the connection.
		return fmt.Errorf("authentication failed (status %#x): %w", resp[1], syscall.EACCES)
	}
	return nil
}

// socksConnectRequest encodes a CONNECT request for address (RFC 1928 §4).
func socksConnectRequest(address string) ([]byte, error) {
	return socksRequest(socksCmdConnect, address)
}

// socksRequest encodes a request of cmd for address (RFC 1928 §4).
func socksRequest(cmd byte, address string) ([]byte, error) {
	host, port, err := splitHostPort(address)
	if err != nil {
		return nil, err
	}
	return appendSocksAddr([]byte{socksVersion, cmd, 0}, host, port)
}

// appendSocksAddr appends ATYP, DST.ADDR and DST.PORT (RFC 1928 §4, §7)
// for host, an IP address or a name.
func appendSocksAddr(req []byte, host string, port uint16) ([]byte, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.WithZone("")
		if ip.Is4() || ip.Is4In6() {
			a := ip.Unmap().As4()
			req = append(append(req, socksAtypIPv4), a[:]...)
		} else {
			a := ip.As16()
			req = append(append(req, socksAtypIPv6), a[:]...)
		}
	} else {
		if host == "" || len(host) > 255 {
			return nil, fmt.Errorf("domain name must be 1 to 255 bytes, is %d", len(host))
		}
		req = append(append(req, socksAtypDomain, byte(len(host))), host...)
	}
	return append(req, byte(port>>8), byte(port)), nil
}

// readSocksReply reads the server's reply to a request (RFC 1928 §6),
// including the bound address, which it returns ("host:port"), and turns
// a failure code into an error.
func readSocksReply(conn net.Conn) (string, error) {
	var head [4]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	if head[0] != socksVersion {
		return "", fmt.Errorf("reply has version %d, not 5", head[0])
	}
	var addrLen int
	switch head[3] {
	case socksAtypIPv4:
		addrLen = 4
	case socksAtypIPv6:
		addrLen = 16
	case socksAtypDomain:
		var l [1]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return "", fmt.Errorf("read reply: %w", err)
		}
		addrLen = int(l[0])
	default:
		if head[1] != socksReplySucceeded {
			return "", &socksReplyError{code: head[1]}
		}
		return "", fmt.Errorf("reply has unknown address type %#x", head[3])
	}
	bound := make([]byte, addrLen+2)
	if _, err := io.ReadFull(conn, bound); err != nil {
		return "", fmt.Errorf("read reply address: %w", err)
	}
	if head[1] != socksReplySucceeded {
		return "", &socksReplyError{code: head[1]}
	}
	port := strconv.Itoa(int(bound[addrLen])<<8 | int(bound[addrLen+1]))
	host := string(bound[:addrLen])
	if head[3] != socksAtypDomain {
		ip, _ := netip.AddrFromSlice(bound[:addrLen])
		host = ip.Unmap().String()
	}
	return net.JoinHostPort(host, port), nil
}

// socksReplyError is a failure reply to CONNECT. It unwraps to the errno
// a kernel connect would have reported for the same cause.
type socksReplyError struct{ code byte }

// socksReply describes a reply code of RFC 1928 §6 and the errno a
// kernel connect reports for the same cause (0 when there is none).
func socksReply(code byte) (string, syscall.Errno) {
	switch code {
	case 0x01:
		return "general SOCKS server failure", 0
	case 0x02:
		return "connection not allowed by ruleset", syscall.EACCES
	case 0x03:
		return "network unreachable", syscall.ENETUNREACH
	case 0x04:
		return "host unreachable", syscall.EHOSTUNREACH
	case 0x05:
		return "connection refused", syscall.ECONNREFUSED
	case 0x06:
		return "TTL expired", syscall.ETIMEDOUT
	case 0x07:
		return "command not supported", syscall.EOPNOTSUPP
	case 0x08:
		return "address type not supported", syscall.EAFNOSUPPORT
	}
	return "unassigned failure reply", 0
}

func (e *socksReplyError) Error() string {
	msg, _ := socksReply(e.code)
	return fmt.Sprintf("%s (reply %#02x)", msg, e.code)
}

func (e *socksReplyError) Unwrap() error {
	if _, errno := socksReply(e.code); errno != 0 {
		return errno
	}
	return nil
}
