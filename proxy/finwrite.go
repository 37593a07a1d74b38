package proxy

import (
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// Faithful close order. A FIN that arrives with a side's last data, or
// right after it, leaves towards the other side on the same segment as
// that data, as it would have without the gateway. It matters for more
// than packet counts: an app that receives a complete response without
// the FIN closes first and becomes the active closer, so its host, not
// the server's, holds the TIME-WAIT state, and a client with many short
// connections to one server runs out of ports (RFC 9293 §3.6.1).
//
// The relay learns of such a FIN by reading: a Read that returns data and
// io.EOF together (io.Reader allows it). The own engine's Conn returns
// them together when the FIN came with the data; for a kernel socket,
// readData looks whether the FIN is queued behind the data it read. The
// relay then writes the data and the FIN in one go with writeFIN.

// finWriter is a Conn that can write data and its FIN in one segment.
type finWriter interface {
	// WriteFIN writes p and then closes the write side, the FIN riding
	// on the last segment of p.
	WriteFIN(p []byte) (int, error)
}

// readData reads from c into p. For a kernel TCP socket it also looks,
// without waiting, whether the peer's FIN is queued right behind the data
// when the read did not fill p, and returns io.EOF with the data if so.
// That costs one recv(MSG_PEEK|MSG_DONTWAIT) per such read; a read that
// fills p is a transfer in progress and is not followed by a peek.
func readData(c net.Conn, p []byte) (int, error) {
	n, err := c.Read(p)
	if err != nil || n == 0 || n == len(p) {
		return n, err
	}
	if tc, ok := c.(*net.TCPConn); ok && peekEOF(tc) {
		return n, io.EOF
	}
	return n, nil
}

// peekEOF reports whether c's receive queue holds the peer's FIN and no
// data: a peek of one byte returns 0.
func peekEOF(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	eof := false
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		eof = n == 0 && err == nil
		return true // never wait: EAGAIN means no FIN yet
	})
	return eof
}

// writeFIN writes p to c and sends FIN after it, in one segment where the
// connection allows: a finWriter does it itself; a kernel socket is
// corked over the write and the shutdown, so that Linux appends the FIN to
// the still unsent tail of p (tcp_send_fin) and pushes both; any other
// Conn gets Write and then CloseWrite. closed reports whether the FIN was
// sent (false for a Conn without CloseWrite, whose FIN comes with its
// final Close).
func writeFIN(c net.Conn, p []byte) (n int, closed bool, err error) {
	switch w := c.(type) {
	case finWriter:
		n, err = w.WriteFIN(p)
		return n, err == nil, err
	case *net.TCPConn:
		setCork(w, 1)
		defer setCork(w, 0)
		if n, err = w.Write(p); err != nil {
			return n, false, err
		}
		return n, true, w.CloseWrite()
	}
	if n, err = c.Write(p); err != nil {
		return n, false, err
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return n, false, nil
	}
	return n, true, cw.CloseWrite()
}

// setCork sets TCP_CORK on c; failures only lose the piggybacking.
func setCork(c *net.TCPConn, v int) {
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, v)
		})
	}
}
