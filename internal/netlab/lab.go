// Package netlab builds throwaway network-namespace topologies for end-to-end
// tests, benchmarks and demos.
//
// A Lab is two named network namespaces joined by a veth pair:
//
//	ns C (client + gateway)                  ns S (servers)
//	  vc-ID 198.19.0.1/24 2001:2:0:1::1/64 ═══ vs-ID 198.19.0.2/24 2001:2:0:1::2/64
//	                                            + 198.19.0.3, 2001:2:0:1::3 (refusing)
//	                                            + 198.19.0.5, 2001:2:0:1::5 (second server)
//	  198.19.0.4, 2001:2:0:1::4 (blackhole: permanent neighbour, unowned MAC)
//	  with Options.DefaultRoute:
//	  default via 198.19.0.2 / 2001:2:0:1::2 dev vc-ID (main table)
//
// RouteViaTUN sends every unmarked packet of C into a TUN device, while
// sockets carrying SO_MARK Fwmark keep using the main table and leave over the
// veth. That is how a gateway running in C sees the client's traffic and
// still reaches the servers in S.
//
// Every address lies in the benchmark ranges 198.18.0.0/15 and 2001:2::/48;
// nothing a Lab does can reach beyond its own namespaces: the veth is their
// only link, and S never forwards (ip_forward and IPv6 forwarding are 0
// there), so what C sends along a default route ends in S.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addresses of the topology. Clients in C reach servers on ServerAddr4/6
// and AltServerAddr4/6 (a second address of S, for tests that need two
// distinct destinations); RefuseAddr4/6 are owned by S but nothing listens
// there, so S answers every SYN with a RST; BlackholeAddr4/6 resolve to a
// MAC nobody owns, so packets leave C and are silently dropped by S.
const (
	ClientVethAddr4 = "198.19.0.1"
	ClientVethAddr6 = "2001:2:0:1::1"
	ServerAddr4     = "198.19.0.2"
	ServerAddr6     = "2001:2:0:1::2"
	RefuseAddr4     = "198.19.0.3"
	RefuseAddr6     = "2001:2:0:1::3"
	BlackholeAddr4  = "198.19.0.4"
	BlackholeAddr6  = "2001:2:0:1::4"
	AltServerAddr4  = "198.19.0.5"
	AltServerAddr6  = "2001:2:0:1::5"

	// VethPrefixLen4 and VethPrefixLen6 are the prefix lengths of the veth
	// link's subnets (198.19.0.0/24 and 2001:2:0:1::/64).
	VethPrefixLen4 = 24
	VethPrefixLen6 = 64

	// BlackholeMAC is the link-layer address C uses for the blackhole
	// addresses. It is locally administered and never assigned to a device.
	BlackholeMAC = "02:00:00:00:00:99"

	// TUNPrefix4 and TUNPrefix6 are the addresses (with prefix) a gateway's
	// TUN device in C is expected to carry.
	TUNPrefix4 = "198.18.0.1/15"
	TUNPrefix6 = "2001:2::1/64"

	// Fwmark is the socket mark (SO_MARK) that exempts a socket from
	// RouteViaTUN's policy rules; Table is the routing table those rules
	// select and RulePriority their priority.
	Fwmark       = 1
	Table        = 100
	RulePriority = 100

	// DefaultPrefix names namespaces when Options.Name is empty.
	DefaultPrefix = "tg"
	// DefaultMTU is the veth MTU when Options.MTU is zero.
	DefaultMTU = 1500
)

// ErrNeedRoot is returned by New when the process lacks the privileges to
// create network namespaces.
var ErrNeedRoot = errors.New("netlab: needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces")

// readyTimeout bounds how long New waits for the veth to carry traffic.
const readyTimeout = 5 * time.Second

// prefixPattern keeps namespace names safe as file names and unambiguous for
// CleanupStale.
var prefixPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.]{0,31}$`)

// Options configure New.
type Options struct {
	// Name is the prefix of the namespace names (DefaultPrefix when empty):
	// a letter followed by up to 31 letters, digits, '_' or '.'. Each Lab
	// appends six random hex digits, so Labs with the same prefix coexist.
	Name string
	// MTU of both veth ends; DefaultMTU when zero.
	MTU int
	// Logger receives debug lines about setup and teardown; nil discards.
	Logger *slog.Logger
	// DefaultRoute gives C default routes in its main table via S over the
	// veth (default via ServerAddr4 and via ServerAddr6, dev ClientVeth), as
	// on a machine whose default route is its LAN interface. Without it C
	// only has routes to the veth's subnets, and dialling anything else fails
	// with ENETUNREACH. S does not forward, so packets along these routes to
	// addresses S does not own are dropped there. RouteViaTUN's rules are
	// looked up before the main table, so they still send unmarked traffic
	// into the TUN; marked sockets now also reach off-link addresses (into
	// S). The kernel deletes these routes, like every route through the
	// veth, when the veth is set down; New installs them only once.
	DefaultRoute bool
}

// Lab is a client namespace C and a server namespace S joined by a veth
// pair. Its methods are safe for concurrent use.
type Lab struct {
	name   string // prefix + id; namespaces are name+"-c" and name+"-s"
	prefix string
	mtu    int
	log    *slog.Logger

	defaultRoute bool // Options.DefaultRoute

	client *NS
	server *NS
	vethC  string
	vethS  string

	lock *os.File // liveness lock (see stale.go), held until Close

	// mu guards closed and serialises Close with RouteViaTUN/Unroute.
	mu     sync.Mutex
	closed bool
}

// New builds a fresh Lab. It needs root; without it the error wraps
// ErrNeedRoot. Namespaces left behind by crashed processes that used the
// same prefix are removed first. If any step fails, everything already made
// is removed again before New returns the error.
func New(opts Options) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w (euid %d)", ErrNeedRoot, os.Geteuid())
	}
	l, err := newLab(opts)
	if err != nil {
		return nil, err
	}
	if err := CleanupStale(l.prefix); err != nil {
		l.log.Warn("netlab: cleaning up stale namespaces", "prefix", l.prefix, "err", err)
	}
	if err := l.build(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("netlab: cleanup after failed setup: %w", cerr))
		}
		return nil, err
	}
	l.log.Debug("netlab: lab ready", "client", l.client.Name, "server", l.server.Name,
		"veth_client", l.vethC, "veth_server", l.vethS, "mtu", l.mtu)
	return l, nil
}

func newLab(opts Options) (*Lab, error) {
	l := &Lab{prefix: opts.Name, mtu: opts.MTU, log: opts.Logger, defaultRoute: opts.DefaultRoute}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	if !prefixPattern.MatchString(l.prefix) {
		return nil, fmt.Errorf("netlab: invalid name prefix %q (want %s)", l.prefix, prefixPattern)
	}
	if l.mtu == 0 {
		l.mtu = DefaultMTU
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	return l, nil
}

func (l *Lab) build() error {
	if err := l.acquireName(); err != nil {
		return err
	}
	var err error
	if l.client, err = newNS(l.name+"-c", l.log); err != nil {
		return err
	}
	if l.server, err = newNS(l.name+"-s", l.log); err != nil {
		return err
	}
	if err := l.client.writeSysctls(nsSysctls()); err != nil {
		return err
	}
	if err := l.server.writeSysctls(append(nsSysctls(), serverSysctls()...)); err != nil {
		return err
	}
	if err := l.wire(); err != nil {
		return err
	}
	if l.defaultRoute {
		if err := l.addDefaultRoutes(); err != nil {
			return err
		}
	}
	if err := l.client.startSockets(); err != nil {
		return err
	}
	return l.server.startSockets()
}

// acquireName picks a random id whose liveness lock nobody holds.
func (l *Lab) acquireName() error {
	var lastErr error
	for range 8 {
		id, err := randomID()
		if err != nil {
			return err
		}
		lock, err := lockLab(l.prefix + id)
		if errors.Is(err, errLabBusy) {
			lastErr = err
			continue
		}
		if err != nil {
			return err
		}
		l.name, l.lock = l.prefix+id, lock
		l.vethC, l.vethS = "vc-"+id, "vs-"+id
		// A crashed process may have left namespaces with this very name.
		return removeLabNamespaces(l.name)
	}
	return fmt.Errorf("netlab: no free lab name with prefix %q: %w", l.prefix, lastErr)
}

func randomID() (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("netlab: random id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Name is the Lab's unique name; the namespaces are Name()+"-c" and
// Name()+"-s".
func (l *Lab) Name() string { return l.name }

// Client is namespace C, where clients and the gateway run.
func (l *Lab) Client() *NS { return l.client }

// Server is namespace S, where the servers listen.
func (l *Lab) Server() *NS { return l.server }

// ClientVeth is the name of the veth end in C ("vc-" + id).
func (l *Lab) ClientVeth() string { return l.vethC }

// ServerVeth is the name of the veth end in S ("vs-" + id).
func (l *Lab) ServerVeth() string { return l.vethS }

// MTU is the MTU of both veth ends.
func (l *Lab) MTU() int { return l.mtu }

// Close deletes both namespaces; the veth pair, routes, rules and any TUN
// device in them go with them once the last socket inside is closed.
// Sockets, listeners and connections made through the Lab are not closed by
// Close: the caller closes them. Dials and Do calls after Close fail with an
// error wrapping net.ErrClosed. Close is idempotent and safe after a partial
// setup; later calls return nil.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for _, n := range []*NS{l.client, l.server} {
		if n != nil {
			errs = append(errs, n.close())
		}
	}
	if l.lock != nil {
		errs = append(errs, unlockLab(l.name, l.lock))
	}
	l.log.Debug("netlab: lab closed", "name", l.name)
	return errors.Join(errs...)
}

// errIfClosedLocked reports net.ErrClosed once Close has started.
func (l *Lab) errIfClosedLocked() error {
	if l.closed {
		return fmt.Errorf("netlab: lab %q: %w", l.name, net.ErrClosed)
	}
	return nil
}

// wire creates the veth pair and configures addresses, links and the
// blackhole neighbours, then waits until both ends carry traffic.
func (l *Lab) wire() error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: l.vethC, MTU: l.mtu},
		PeerName:      l.vethS,
		PeerMTU:       uint32(l.mtu),
		PeerNamespace: netlink.NsFd(int(l.server.handle)),
	}
	if err := l.client.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("netlab: add veth %s/%s (mtu %d): %w", l.vethC, l.vethS, l.mtu, err)
	}
	if err := l.client.configureLink(l.vethC, clientAddrs()); err != nil {
		return err
	}
	if err := l.server.configureLink(l.vethS, serverAddrs()); err != nil {
		return err
	}
	if err := l.addBlackholeNeighbours(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := l.client.waitLinkReady(ctx, l.vethC); err != nil {
		return err
	}
	return l.server.waitLinkReady(ctx, l.vethS)
}

func (l *Lab) addBlackholeNeighbours() error {
	link, err := l.client.nl.LinkByName(l.vethC)
	if err != nil {
		return fmt.Errorf("netlab: %s: find %s: %w", l.client.Name, l.vethC, err)
	}
	mac, err := net.ParseMAC(BlackholeMAC)
	if err != nil {
		return fmt.Errorf("netlab: parse blackhole MAC: %w", err)
	}
	for _, a := range []struct {
		ip     string
		family int
	}{{BlackholeAddr4, netlink.FAMILY_V4}, {BlackholeAddr6, netlink.FAMILY_V6}} {
		n := &netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			Family:       a.family,
			State:        netlink.NUD_PERMANENT,
			IP:           net.ParseIP(a.ip),
			HardwareAddr: mac,
		}
		if err := l.client.nl.NeighSet(n); err != nil {
			return fmt.Errorf("netlab: %s: neighbour %s lladdr %s: %w", l.client.Name, a.ip, mac, err)
		}
	}
	return nil
}

func clientAddrs() []string {
	return []string{
		fmt.Sprintf("%s/%d", ClientVethAddr4, VethPrefixLen4),
		fmt.Sprintf("%s/%d", ClientVethAddr6, VethPrefixLen6),
	}
}

// serverAddrs includes the refusing and the second server addresses as host
// addresses (/32, /128): they lie inside the veth's subnets, which C already
// reaches on-link, so S only needs to own them to answer (RST or accept).
func serverAddrs() []string {
	return []string{
		fmt.Sprintf("%s/%d", ServerAddr4, VethPrefixLen4),
		fmt.Sprintf("%s/%d", ServerAddr6, VethPrefixLen6),
		RefuseAddr4 + "/32",
		RefuseAddr6 + "/128",
		AltServerAddr4 + "/32",
		AltServerAddr6 + "/128",
	}
}

// addrFlags keeps IPv6 addresses usable at once instead of tentative for the
// duration of duplicate address detection.
func addrFlags(ipn *net.IPNet) int {
	if ipn.IP.To4() == nil {
		return unix.IFA_F_NODAD
	}
	return 0
}
