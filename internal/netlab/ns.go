package netlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsRunDir is where named namespaces live, as with `ip netns`.
const netnsRunDir = "/run/netns"

// pollInterval is how often readiness checks look at the kernel's state.
const pollInterval = 5 * time.Millisecond

// NS is one named network namespace of a Lab. Its methods are safe for
// concurrent use.
type NS struct {
	// Name is the namespace's name as `ip netns` shows it.
	Name string

	log *slog.Logger
	nl  *netlink.Handle // netlink socket opened inside the namespace

	// mu guards handle and closed: Close closes the handle's descriptor, so
	// entering the namespace must not race with it (the number could be
	// reused for an unrelated file).
	mu      sync.RWMutex
	handle  netns.NsHandle
	closed  bool
	created bool // the name is mounted in netnsRunDir and must be removed

	sockets *socketFactory // nil until startSockets
}

// newNS creates the named namespace with its loopback up. On error the
// namespace is removed again.
func newNS(name string, log *slog.Logger) (n *NS, err error) {
	n = &NS{Name: name, log: log, handle: netns.None()}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
			n = nil
		}
	}()
	if n.handle, err = createNamedNS(name); err != nil {
		return n, err
	}
	n.created = true
	if err = n.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		n.nl = h
		return err
	}); err != nil {
		return n, fmt.Errorf("netlab: %s: open netlink: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return n, fmt.Errorf("netlab: %s: find lo: %w", name, err)
	}
	if err = n.nl.LinkSetUp(lo); err != nil {
		return n, fmt.Errorf("netlab: %s: set lo up: %w", name, err)
	}
	log.Debug("netlab: namespace created", "ns", name)
	return n, nil
}

// Netlink returns a netlink handle whose socket lives in the namespace, for
// configuring devices there (a TUN's addresses, say). It is owned by the NS
// and valid until the Lab is closed; do not Close it, and do not use it
// after Close: a closed handle silently falls back to the calling thread's
// namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Do runs f on a fresh goroutine whose OS thread has been moved into the
// namespace and waits for it. Sockets and devices f creates belong to the
// namespace and stay there after Do returns. Goroutines that f starts do not
// inherit the namespace. The thread is never handed back to the Go runtime:
// it exits with the goroutine, so no other goroutine ever runs in the
// namespace by accident, and the caller's thread is left untouched. A panic
// in f is re-raised in the caller. After Close, Do returns an error
// wrapping net.ErrClosed without calling f.
func (n *NS) Do(f func() error) error {
	return runLocked(func() error {
		if err := n.enter(); err != nil {
			return err
		}
		return f()
	})
}

// enter moves the calling (locked) thread into the namespace.
func (n *NS) enter() error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return fmt.Errorf("netlab: namespace %q: %w", n.Name, net.ErrClosed)
	}
	if err := netns.Set(n.handle); err != nil {
		return fmt.Errorf("netlab: enter namespace %q: %w", n.Name, err)
	}
	return nil
}

// Listen is net.Listen with the socket created inside the namespace.
// Addresses should be IP literals (no name resolution inside namespaces).
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: %s: listen %s %s: %w", n.Name, network, addr, err)
	}
	return l, nil
}

// ListenPacket is net.ListenPacket with the socket created inside the
// namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab: %s: listen %s %s: %w", n.Name, network, addr, err)
	}
	return c, nil
}

// Command returns an unstarted command that runs name with args inside the
// namespace (through `ip netns exec`, which also gives it the namespace's
// view of /sys). ctx kills the process as in exec.CommandContext.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// sysctl is one /proc/sys/net setting.
type sysctl struct{ key, value string }

// nsSysctls are set in both namespaces before any link is created, so the
// "default" values reach the veth ends too. Reverse-path filtering would drop
// replies that come back through a TUN; IPv6 must be on; DAD would leave
// link-local addresses tentative for a second after the links come up.
// Load generators open tens of thousands of short connections: a wide
// ephemeral port range and reuse of TIME_WAIT ports for new outgoing
// connections keep connect from running out of ports.
func nsSysctls() []sysctl {
	return []sysctl{
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv6/conf/all/disable_ipv6", "0"},
		{"net/ipv6/conf/default/disable_ipv6", "0"},
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_dad", "0"},
		{"net/ipv4/ip_local_port_range", "10240 65535"},
		{"net/ipv4/tcp_tw_reuse", "1"},
	}
}

// serverSysctls keep S from forwarding whatever C sends along a default
// route. They are set explicitly because a new namespace copies IPv4's
// conf/all settings, ip_forward among them, from the initial namespace
// (net.core.devconf_inherit_init_net=0, the default): on a host that
// forwards, S would too. IPv6 starts from defaults, set anyway for clarity.
func serverSysctls() []sysctl {
	return []sysctl{
		{"net/ipv4/ip_forward", "0"},
		{"net/ipv6/conf/all/forwarding", "0"},
		{"net/ipv6/conf/default/forwarding", "0"},
	}
}

// writeSysctls sets the namespace's own copies of the settings; /proc/sys/net
// shows the namespace of the thread that opens it, hence Do.
func (n *NS) writeSysctls(settings []sysctl) error {
	return n.Do(func() error {
		for _, s := range settings {
			p := filepath.Join("/proc/sys", s.key)
			if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
				return fmt.Errorf("netlab: %s: sysctl %s=%s: %w", n.Name, s.key, s.value, err)
			}
		}
		return nil
	})
}

// Sysctl reads one of the namespace's /proc/sys settings, key as in
// "net/ipv4/ip_local_port_range", without the trailing newline.
func (n *NS) Sysctl(key string) (string, error) {
	var v []byte
	err := n.Do(func() error {
		var err error
		v, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("netlab: %s: sysctl %s: %w", n.Name, key, err)
	}
	return strings.TrimSpace(string(v)), nil
}

// SetSysctl changes one of the namespace's /proc/sys settings.
func (n *NS) SetSysctl(key, value string) error {
	return n.writeSysctls([]sysctl{{key, value}})
}

// configureLink sets the link up and adds the addresses (CIDR strings).
func (n *NS) configureLink(name string, cidrs []string) error {
	link, err := n.nl.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netlab: %s: find %s: %w", n.Name, name, err)
	}
	if err := n.nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("netlab: %s: set %s up: %w", n.Name, name, err)
	}
	for _, cidr := range cidrs {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return fmt.Errorf("netlab: parse %q: %w", cidr, err)
		}
		a.Flags = addrFlags(a.IPNet)
		if err := n.nl.AddrAdd(link, a); err != nil {
			return fmt.Errorf("netlab: %s: add %s to %s: %w", n.Name, cidr, name, err)
		}
	}
	return nil
}

// waitLinkReady polls until the link is operationally up and none of its
// addresses is tentative.
func (n *NS) waitLinkReady(ctx context.Context, name string) error {
	for {
		ready, err := n.linkReady(name)
		if err != nil {
			return err
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("netlab: %s: waiting for %s to come up: %w", n.Name, name, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

func (n *NS) linkReady(name string) (bool, error) {
	link, err := n.nl.LinkByName(name)
	if err != nil {
		return false, fmt.Errorf("netlab: %s: find %s: %w", n.Name, name, err)
	}
	if link.Attrs().OperState != netlink.OperUp {
		return false, nil
	}
	addrs, err := n.nl.AddrList(link, netlink.FAMILY_ALL)
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("netlab: %s: list addresses of %s: %w", n.Name, name, err)
	}
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			return false, nil
		}
	}
	return true, nil
}

// close stops the socket factory, releases the descriptors and removes the
// name. It tolerates every partial state newNS can leave behind.
func (n *NS) close() error {
	// The factory is stopped before taking mu: its goroutine may still be
	// entering the namespace, which needs mu.
	if n.sockets != nil {
		n.sockets.close()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.nl != nil {
		n.nl.Close()
	}
	var errs []error
	if n.handle.IsOpen() {
		errs = append(errs, n.handle.Close())
	}
	if n.created {
		errs = append(errs, deleteNamedNS(n.Name))
	}
	n.log.Debug("netlab: namespace removed", "ns", n.Name)
	return errors.Join(errs...)
}
