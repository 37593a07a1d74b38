package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"syscall"
)

// maxResponseHeader bounds the CONNECT response header a proxy may send.
const maxResponseHeader = 64 << 10

// httpConnect is an HTTP/1.1 CONNECT client (RFC 9110 §9.3.6).
type httpConnect struct {
	server  string
	auth    string // Proxy-Authorization value, empty for none
	forward Dialer
}

// NewHTTP returns a Dialer that opens tunnels with HTTP/1.1 CONNECT
// through the proxy at server (host:port), reached with forward (nil
// means NewDirect with no options). With a non-empty user it sends Basic
// Proxy-Authorization. Only TCP networks are supported.
//
// Any 2xx response opens the tunnel; bytes the proxy sent after the
// response header are delivered by the returned conn's first Reads. Other
// statuses fail the dial with an error that unwraps, where the status
// has a kernel equivalent, to an errno: 502 and 503 (what proxies send
// when the destination refused or could not be reached) to ECONNREFUSED,
// 504 to ETIMEDOUT, 403 and 407 to EACCES.
func NewHTTP(server, user, password string, forward Dialer) Dialer {
	if forward == nil {
		forward = NewDirect(DirectOptions{})
	}
	h := &httpConnect{server: server, forward: forward}
	if user != "" {
		h.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	}
	return h
}

func (h *httpConnect) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if !isTCP(network) {
		return nil, fmt.Errorf("proxy: http: network %q: %w", network, errors.ErrUnsupported)
	}
	host, port, err := splitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("proxy: http: destination %q: %w", address, err)
	}
	authority := net.JoinHostPort(host, strconv.Itoa(int(port)))
	conn, err := h.forward.DialContext(ctx, "tcp", h.server)
	if err != nil {
		return nil, fmt.Errorf("proxy: http: connect to server %s: %w", h.server, err)
	}
	var early []byte
	err = handshake(ctx, conn, func() (err error) {
		early, err = h.connect(conn, authority)
		return err
	})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy: http %s: CONNECT %s: %w", h.server, authority, err)
	}
	if len(early) == 0 {
		return conn, nil
	}
	return &prefixConn{Conn: conn, early: early}, nil
}

// connect sends the CONNECT request and reads the response header. It
// returns the tunnel bytes that arrived together with the header.
func (h *httpConnect) connect(conn net.Conn, authority string) ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", authority, authority)
	if h.auth != "" {
		fmt.Fprintf(&b, "Proxy-Authorization: %s\r\n", h.auth)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	lr := &io.LimitedReader{R: conn, N: maxResponseHeader}
	br := bufio.NewReader(lr)
	if err := readConnectResponse(textproto.NewReader(br)); err != nil {
		if lr.N == 0 {
			return nil, fmt.Errorf("response header longer than %d bytes", maxResponseHeader)
		}
		return nil, err
	}
	early := make([]byte, br.Buffered())
	br.Read(early) // cannot fail: the bytes are buffered
	return early, nil
}

// readConnectResponse reads status lines and headers until a final
// response, skipping interim 1xx responses (RFC 9110 §15.2), and
// succeeds on 2xx.
func readConnectResponse(r *textproto.Reader) error {
	for {
		line, err := r.ReadLine()
		if err != nil {
			return fmt.Errorf("read status line: %w", err)
		}
		code, err := parseStatusLine(line)
		if err != nil {
			return err
		}
		if _, err := r.ReadMIMEHeader(); err != nil {
			return fmt.Errorf("read response header: %w", err)
		}
		switch {
		case code >= 100 && code < 200 && code != 101:
			continue
		case code >= 200 && code < 300:
			return nil
		default:
			return &httpStatusError{code: code, status: line}
		}
	}
}

// parseStatusLine returns the status code of an HTTP/1.x status line
// (RFC 9112 §4).
func parseStatusLine(line string) (int, error) {
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") {
		return 0, fmt.Errorf("malformed status line %q", line)
	}
	codeText, _, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if err != nil || len(codeText) != 3 || code < 100 {
		return 0, fmt.Errorf("malformed status code in %q", line)
	}
	return code, nil
}

// httpStatusError is a non-2xx answer to CONNECT. It unwraps to the errno
// of the kernel failure the status most likely stands for.
type httpStatusError struct {
	code   int
	status string
}

func (e *httpStatusError) Error() string { return fmt.Sprintf("proxy answered %q", e.status) }

func (e *httpStatusError) Unwrap() error {
	switch e.code {
	case 502, 503:
		return syscall.ECONNREFUSED
	case 504:
		return syscall.ETIMEDOUT
	case 403, 407:
		return syscall.EACCES
	}
	return nil
}

// prefixConn is a tunnel whose first bytes were read together with the
// proxy's response header. Reads return those bytes first. It passes
// CloseWrite, CloseRead and SetLinger through to the underlying
// connection, so half-close and abort work as on a *net.TCPConn.
type prefixConn struct {
	net.Conn
	early []byte // not yet returned by Read; only Read touches it
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("proxy: http tunnel: close write: %w", errors.ErrUnsupported)
}

func (c *prefixConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("proxy: http tunnel: close read: %w", errors.ErrUnsupported)
}

func (c *prefixConn) SetLinger(sec int) error {
	if l, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return l.SetLinger(sec)
	}
	return fmt.Errorf("proxy: http tunnel: set linger: %w", errors.ErrUnsupported)
}
