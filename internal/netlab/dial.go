package netlab

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// socketFactory is a goroutine whose thread lives in a namespace and creates
// socket descriptors. socket(2) puts a socket into the namespace of the
// calling thread; everything after it (setsockopt, bind, connect, I/O)
// works from any thread. Waking the factory's locked thread costs tens of
// microseconds, so it keeps a small pool of ready descriptors per socket
// kind and refills a pool in one go once it is half empty: most dials just
// take a descriptor from a channel.
type socketFactory struct {
	pools  [numKinds]chan int      // ready descriptors, owned by whoever receives them
	refill [numKinds]chan struct{} // (cap 1) asks run to top up a pool
	reqs   chan socketReq          // direct requests while a pool is empty
	quit   chan struct{}           // closed by close to stop run
	done   chan struct{}           // closed when run has returned
	once   sync.Once               // closes quit
}

// poolSize is the number of ready descriptors per kind; a kind's pool is
// filled only after its first use.
const poolSize = 64

// Socket kinds: index = 2*isUDP + isIPv6.
const (
	kindTCP4 = iota
	kindTCP6
	kindUDP4
	kindUDP6
	numKinds
)

func kindSocket(kind int) (domain, typ int) {
	domain, typ = unix.AF_INET, unix.SOCK_STREAM
	if kind&1 != 0 {
		domain = unix.AF_INET6
	}
	if kind&2 != 0 {
		typ = unix.SOCK_DGRAM
	}
	return domain, typ
}

type socketReq struct {
	kind  int
	reply chan<- socketResp // buffered (1): run never blocks on it
}

type socketResp struct {
	fd  int
	err error
}

// startSockets starts the namespace's socket factory; NS.close stops it.
func (n *NS) startSockets() error {
	f := &socketFactory{
		reqs: make(chan socketReq),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	for k := range f.pools {
		f.pools[k] = make(chan int, poolSize)
		f.refill[k] = make(chan struct{}, 1)
	}
	ready := make(chan error, 1)
	go f.run(n, ready)
	if err := <-ready; err != nil {
		<-f.done
		return fmt.Errorf("netlab: %s: start socket factory: %w", n.Name, err)
	}
	n.sockets = f
	return nil
}

func (f *socketFactory) run(n *NS, ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
	defer close(f.done)
	defer f.drain()
	if err := n.enter(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for {
		select {
		case r := <-f.reqs:
			fd, err := newSocket(r.kind)
			r.reply <- socketResp{fd: fd, err: err}
			f.fill(r.kind)
		case <-f.refill[kindTCP4]:
			f.fill(kindTCP4)
		case <-f.refill[kindTCP6]:
			f.fill(kindTCP6)
		case <-f.refill[kindUDP4]:
			f.fill(kindUDP4)
		case <-f.refill[kindUDP6]:
			f.fill(kindUDP6)
		case <-f.quit:
			return
		}
	}
}

func newSocket(kind int) (int, error) {
	domain, typ := kindSocket(kind)
	fd, err := unix.Socket(domain, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	return fd, nil
}

// fill tops up a pool. Errors (EMFILE, say) just leave it short: the next
// direct request reports them.
func (f *socketFactory) fill(kind int) {
	for len(f.pools[kind]) < poolSize {
		fd, err := newSocket(kind)
		if err != nil {
			return
		}
		select {
		case f.pools[kind] <- fd:
		default:
			unix.Close(fd)
			return
		}
	}
}

// drain closes the descriptors nobody took.
func (f *socketFactory) drain() {
	for _, pool := range f.pools {
		for len(pool) > 0 {
			unix.Close(<-pool)
		}
	}
}

// socket returns a non-blocking, close-on-exec descriptor created in the
// namespace; the caller owns it. After close it fails with net.ErrClosed.
func (f *socketFactory) socket(ctx context.Context, kind int) (int, error) {
	select {
	case <-f.quit:
		return -1, net.ErrClosed
	case fd := <-f.pools[kind]:
		if len(f.pools[kind]) < poolSize/2 {
			select {
			case f.refill[kind] <- struct{}{}:
			default: // a refill is already pending
			}
		}
		return fd, nil
	default:
	}
	reply := make(chan socketResp, 1)
	select {
	case f.reqs <- socketReq{kind: kind, reply: reply}:
	case <-f.quit:
		return -1, net.ErrClosed
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	r := <-reply
	return r.fd, r.err
}

// close stops the factory, closes its pooled descriptors and waits for its
// goroutine. Idempotent.
func (f *socketFactory) close() {
	f.once.Do(func() { close(f.quit) })
	<-f.done
}

// Dialer opens connections whose sockets live in a namespace. It is cheap
// enough for load generators: a dial costs one hand-off to the namespace's
// socket factory plus the usual system calls, and dials run concurrently.
// A Dialer is safe for concurrent use; do not change its fields meanwhile.
type Dialer struct {
	// NS is the namespace the sockets are created in. Required.
	NS *NS
	// Mark is set as SO_MARK before connecting; zero leaves sockets
	// unmarked. Fwmark makes sockets bypass RouteViaTUN's rules.
	Mark uint32
	// LocalAddr, if valid, is bound before connecting; port 0 lets the
	// kernel choose.
	LocalAddr netip.AddrPort
}

// DialContext is (&Dialer{NS: n}).DialContext.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := Dialer{NS: n}
	return d.DialContext(ctx, network, addr)
}

// DialContext connects to addr, an IP literal with port ("198.19.0.2:80",
// "[2001:2:0:1::2]:80"), over network "tcp", "tcp4", "tcp6", "udp", "udp4"
// or "udp6"; names are not resolved. It returns a *net.TCPConn or
// *net.UDPConn owned by the caller. ctx bounds the connection attempt only.
// Errors are *net.OpError values (wrapped with the namespace's name), so
// errors.Is finds syscall.ECONNREFUSED, context.DeadlineExceeded or
// net.ErrClosed (after the Lab is closed).
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return d.dialWith(ctx, network, addr, d.NS.sockets.socket)
}

// DialAsUID is (&Dialer{NS: n}).DialContext with a socket owned by uid:
// its sk_uid, which policy rules with `uidrange` match, is uid instead of
// the process's, as if a process running as uid had dialled. The process
// keeps its identity (root) and no other goroutine is affected: the socket
// is created on a throwaway thread of the namespace whose filesystem uid
// (the value the kernel copies into sk_uid) is set to uid. Such dials
// bypass the socket pool and cost a thread hand-off each. uid 4294967295
// ((uid_t)-1) is rejected.
func (n *NS) DialAsUID(ctx context.Context, uid uint32, network, addr string) (net.Conn, error) {
	d := Dialer{NS: n}
	return d.dialWith(ctx, network, addr, func(_ context.Context, kind int) (int, error) {
		return n.socketAsUID(uid, kind)
	})
}

// socketAsUID creates a descriptor like the socket factory's, on a thread of
// the namespace whose fsuid is uid; the thread dies afterwards (see Do), so
// the changed fsuid never reaches other goroutines.
func (n *NS) socketAsUID(uid uint32, kind int) (int, error) {
	if uid == math.MaxUint32 {
		return -1, fmt.Errorf("socket as uid %d: not a valid uid", uid)
	}
	fd := -1
	err := n.Do(func() error {
		// setfsuid(2) reports no errors; asking with the invalid uid -1
		// returns the current fsuid without changing it.
		unix.SetfsuidRetUid(int(uid))
		if got, _ := unix.SetfsuidRetUid(-1); got != int(uid) {
			return fmt.Errorf("socket as uid %d: setfsuid left fsuid %d", uid, got)
		}
		var err error
		fd, err = newSocket(kind)
		return err
	})
	return fd, err
}

// dialWith is DialContext with the descriptor taken from socket.
func (d *Dialer) dialWith(ctx context.Context, network, addr string, socket socketFunc) (net.Conn, error) {
	target, err := parseTarget(network, addr)
	if err != nil {
		return nil, fmt.Errorf("netlab: %s: %w", d.NS.Name, &net.OpError{Op: "dial", Net: network, Err: err})
	}
	c, err := d.dial(ctx, target, socket)
	if err != nil {
		return nil, fmt.Errorf("netlab: %s: %w", d.NS.Name, &net.OpError{Op: "dial", Net: network, Addr: target.netAddr(), Err: err})
	}
	return c, nil
}

// socketFunc returns a new non-blocking, close-on-exec descriptor of a
// socket kind, created in the dialer's namespace and owned by the caller.
type socketFunc func(ctx context.Context, kind int) (int, error)

func (d *Dialer) dial(ctx context.Context, t target, socket socketFunc) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fd, err := socket(ctx, t.kind())
	if err != nil {
		return nil, err
	}
	if err := d.prepare(fd, t); err != nil {
		unix.Close(fd)
		return nil, err
	}
	err = unix.Connect(fd, sockaddr(t.addr))
	if err != nil && !errors.Is(err, unix.EINPROGRESS) && !errors.Is(err, unix.EINTR) {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	f := os.NewFile(uintptr(fd), "netlab-dial") // non-blocking: registered with the poller
	defer f.Close()                             // net.FileConn works on a duplicate
	if err != nil {
		if err := awaitConnect(ctx, f); err != nil {
			return nil, err
		}
	}
	return net.FileConn(f)
}

// prepare applies the Dialer's socket options before connect.
func (d *Dialer) prepare(fd int, t target) error {
	if d.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(d.Mark)); err != nil {
			return os.NewSyscallError("setsockopt SO_MARK", err)
		}
	}
	if !d.LocalAddr.IsValid() {
		return nil
	}
	local := netip.AddrPortFrom(d.LocalAddr.Addr().Unmap(), d.LocalAddr.Port())
	if local.Addr().Is4() != t.addr.Addr().Is4() {
		return fmt.Errorf("local address %s and remote address %s differ in family", local, t.addr)
	}
	if err := unix.Bind(fd, sockaddr(local)); err != nil {
		return os.NewSyscallError("bind", err)
	}
	return nil
}

// awaitConnect waits until a non-blocking connect has finished or ctx is
// done, the same way package net does: wait for writability, then read
// SO_ERROR.
func awaitConnect(ctx context.Context, f *os.File) error {
	stop := context.AfterFunc(ctx, func() {
		f.SetWriteDeadline(time.Unix(1, 0)) // wakes the waiter below
	})
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var connErr error
	err = rc.Write(func(fd uintptr) bool {
		connErr = connectResult(int(fd))
		return connErr != errConnecting
	})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return err
	}
	return connErr
}

// errConnecting means the connection attempt has not finished yet.
var errConnecting = errors.New("netlab: connect in progress")

func connectResult(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	switch errno := syscall.Errno(v); errno {
	case 0:
		// Writable without error can still mean "not yet"; only a peer
		// name proves the handshake is done.
		if _, err := unix.Getpeername(fd); err != nil {
			return errConnecting
		}
		return nil
	case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
		return errConnecting
	default:
		return os.NewSyscallError("connect", errno)
	}
}

// target is a parsed dial destination.
type target struct {
	addr netip.AddrPort // unmapped
	typ  int            // SOCK_STREAM or SOCK_DGRAM
	tcp  bool
}

func (t target) kind() int {
	k := kindTCP4
	if !t.tcp {
		k = kindUDP4
	}
	if !t.addr.Addr().Is4() {
		k++
	}
	return k
}

func (t target) netAddr() net.Addr {
	if t.tcp {
		return net.TCPAddrFromAddrPort(t.addr)
	}
	return net.UDPAddrFromAddrPort(t.addr)
}

func parseTarget(network, addr string) (target, error) {
	var t target
	switch network {
	case "tcp", "tcp4", "tcp6":
		t.typ, t.tcp = unix.SOCK_STREAM, true
	case "udp", "udp4", "udp6":
		t.typ = unix.SOCK_DGRAM
	default:
		return t, net.UnknownNetworkError(network)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return t, fmt.Errorf("address %q is not an IP literal with port: %w", addr, err)
	}
	t.addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	is4 := t.addr.Addr().Is4()
	switch network[len(network)-1] {
	case '4':
		if !is4 {
			return t, &net.AddrError{Err: "not an IPv4 address", Addr: addr}
		}
	case '6':
		if is4 {
			return t, &net.AddrError{Err: "not an IPv6 address", Addr: addr}
		}
	}
	return t, nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
