package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Dialer opens upstream connections. Implementations honour ctx for the
// whole connect, including any proxy handshake: when ctx is done the dial
// fails with an error that satisfies errors.Is against
// context.DeadlineExceeded and os.ErrDeadlineExceeded if a deadline
// passed. A refusal by the destination or by an upstream proxy satisfies
// errors.Is(err, syscall.ECONNREFUSED).
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// DirectOptions configure the sockets of a direct Dialer.
type DirectOptions struct {
	// Fwmark is set as SO_MARK on every socket so that policy routing can
	// keep upstream traffic out of the TUN; 0 leaves the mark unset.
	// Setting a mark needs CAP_NET_ADMIN.
	Fwmark uint32
	// BindInterface binds every socket to this interface
	// (SO_BINDTODEVICE); empty means none. Needs CAP_NET_RAW.
	BindInterface string
	// Resolver, when set, looks up the host names the dialer connects
	// to (the gateway's own DNS servers); nil uses the system's, through
	// sockets marked and bound as above.
	Resolver *net.Resolver
}

// direct dials with the kernel's sockets.
type direct struct {
	d    net.Dialer
	opts DirectOptions
}

// NewDirect returns a Dialer that connects with the kernel's sockets,
// marked and bound as o says. It supports the networks of net.Dialer
// ("tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", ...); connect timeouts
// come from the ctx given to DialContext. Failing to set a socket option
// fails the dial.
func NewDirect(o DirectOptions) Dialer {
	// No TCP keepalives upstream: the relay's idle timeout already ends
	// dead flows, and net.Dialer's default costs three setsockopt calls
	// per connection.
	dd := &direct{d: net.Dialer{KeepAlive: -1}, opts: o}
	if o.Fwmark != 0 || o.BindInterface != "" {
		dd.d.Control = o.control
	}
	// The lookups of host names this dialer connects to are the gateway's
	// own traffic too: marked and bound like the rest, so that policy
	// routing keeps them out of the TUN.
	dd.d.Resolver = o.resolver()
	return dd
}

func (o DirectOptions) resolver() *net.Resolver {
	if o.Resolver != nil {
		return o.Resolver
	}
	return o.SystemResolver()
}

// SystemResolver returns a resolver of the system's servers (Go's own,
// reading /etc/resolv.conf) whose sockets are marked and bound as o says;
// with neither set, the default resolver.
func (o DirectOptions) SystemResolver() *net.Resolver {
	if o.Fwmark == 0 && o.BindInterface == "" {
		return net.DefaultResolver
	}
	d := net.Dialer{Control: o.control}
	return &net.Resolver{PreferGo: true, Dial: d.DialContext}
}

func (o DirectOptions) control(network, address string, c syscall.RawConn) error {
	return controlSocket(c, o)
}

func (d *direct) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.d.DialContext(ctx, network, address)
	if err != nil {
		if ctx.Err() != nil {
			// net reports a cancelled dial as "operation was canceled";
			// the context's cause says why.
			return nil, fmt.Errorf("proxy: direct: dial %s %s: %w", network, address, ctxError(ctx))
		}
		return nil, err
	}
	return c, nil
}

// controlSocket applies o to the socket behind c before it connects.
func controlSocket(c syscall.RawConn, o DirectOptions) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = setSocketOptions(int(fd), o) })
	if err != nil {
		return fmt.Errorf("proxy: direct: raw control: %w", err)
	}
	return serr
}

// isTCP reports whether network names a TCP network of the net package.
func isTCP(network string) bool {
	return network == "tcp" || network == "tcp4" || network == "tcp6"
}

// splitHostPort splits address and parses the port as a number; service
// names are not looked up.
func splitHostPort(address string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	return host, uint16(p), nil
}

// handshake runs fn, the request/reply exchange with an upstream proxy on
// conn, bounded by ctx: ctx's deadline becomes conn's deadline and
// cancelling ctx interrupts fn's I/O. When ctx ended the exchange the
// error is ctx's (see ctxError). On success conn has no deadline left.
func handshake(ctx context.Context, conn net.Conn, fn func() error) error {
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err := fn()
	if !stop() {
		// The interrupt ran or is running; it may still move conn's
		// deadline, so conn is unusable whatever fn returned.
		return ctxError(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline taken from ctx fired just before ctx noticed.
			return &timeoutError{msg: err.Error()}
		}
		return err
	}
	return conn.SetDeadline(time.Time{})
}
