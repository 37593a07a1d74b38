//go:build linux

package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tungate/tungate/internal/virtio"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// DefaultMTU is the MTU Open uses when Config.MTU is 0.
const DefaultMTU = 1500

// Config says which TUN Open creates and how it is configured.
type Config struct {
	// Name is the interface name, e.g. "tun0"; empty lets the kernel pick
	// one ("tunN"). A name with "%d" is a kernel template.
	Name string
	// MTU of the interface; 0 means DefaultMTU. IPv6 needs >= 1280.
	MTU int
	// Addresses are assigned to the interface with their prefix length, so
	// the kernel adds the connected route for each (198.18.0.1/15 routes
	// 198.18.0.0/15 into the TUN). IPv6 addresses skip duplicate address
	// detection and are usable at once.
	Addresses []netip.Prefix
	// Routes are added to the main table via the interface, in addition
	// to the connected routes of Addresses.
	Routes []netip.Prefix
	// Offload asks for the superpacket path (OffloadDevice): TCP
	// segmentation and checksum offload (TUN_F_TSO4, TUN_F_TSO6,
	// TUN_F_CSUM), read and written whole. Open logs whether it got it.
	Offload bool
	// Queues above 1 open the device with IFF_MULTI_QUEUE and that many
	// queues (Linux.Queues), the kernel spreading flows over them. It
	// needs Offload: the extra queues are read and written on the
	// superpacket path only. Open logs what it got.
	Queues int
}

// Linux is a configured Linux TUN device. It implements Device.
//
// Read may return wgtun.ErrTooManySegments with valid packets (see Device);
// it is logged. Errors after Close satisfy errors.Is(err, os.ErrClosed).
type Linux struct {
	dev   wgtun.Device
	name  string
	index int
	mtu   int
	log   *slog.Logger

	closed     atomic.Bool
	closeOnce  sync.Once
	closeErr   error
	eventsDone chan struct{} // closed when the events drainer has returned

	tooManySegments atomic.Uint64

	// offload is set when ReadOffload and WriteOffload work: the device
	// has IFF_VNET_HDR and TCP offloads, and q0 reaches its descriptor.
	offload bool
	q0      queue
	// extra are the queues after the first of a multi-queue device; files
	// holds their descriptors until the device is set up.
	extra []*Queue
	files []*os.File

	// writeMu guards scratch, the private copy of the slice headers handed
	// to wgtun, whose GRO swaps and extends elements of the slice it gets.
	writeMu sync.Mutex
	scratch [][]byte
}

var _ OffloadDevice = (*Linux)(nil)

// Open creates the TUN device in the network namespace of the calling OS
// thread (callers that target another namespace lock the thread into it
// first), assigns cfg.Addresses, sets the link up and adds cfg.Routes. On
// any failure the device is removed again and the error names the step
// that failed. log may be nil. Close removes the device.
func Open(cfg Config, log *slog.Logger) (*Linux, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mtu, err := cfg.mtu()
	if err != nil {
		return nil, err
	}
	var dev wgtun.Device
	var files []*os.File
	multiWhy := ""
	switch {
	case cfg.Queues <= 1:
	case !cfg.Offload:
		multiWhy = "the extra queues need tun offload"
	default:
		files, err = openQueues(cfg.Name, cfg.Queues)
		if err != nil {
			multiWhy = err.Error()
			break
		}
		if dev, err = wgtun.CreateTUNFromFile(files[0], mtu); err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("tun: create %q with %d queues: %w", cfg.Name, cfg.Queues, err)
		}
		files = files[1:]
	}
	if dev == nil {
		if dev, err = wgtun.CreateTUN(cfg.Name, mtu); err != nil {
			return nil, fmt.Errorf("tun: create %q: %w", cfg.Name, err)
		}
	}
	l := &Linux{dev: dev, name: cfg.Name, mtu: mtu, log: log, eventsDone: make(chan struct{}), files: files}
	name, err := dev.Name()
	if err == nil {
		l.name = name
	}
	go l.drainEvents()
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("tun: name of new device %q: %w", cfg.Name, err)
	}
	if err := l.setup(cfg); err != nil {
		_ = l.Close()
		return nil, err
	}
	log.Info("tun device open", "name", l.name, "mtu", l.mtu, "batch", dev.BatchSize(),
		"addresses", cfg.Addresses, "routes", cfg.Routes)
	if cfg.Offload {
		if why := l.enableOffload(); why != "" {
			log.Info("tun offload off: packets are split into segments and coalesced again", "name", l.name, "reason", why)
		} else {
			log.Info("tun offload on: TCP superpackets read and written whole (TSO4, TSO6, checksum)", "name", l.name)
		}
	}
	if err := l.setupQueues(); err != nil && multiWhy == "" {
		multiWhy = err.Error()
	}
	if cfg.Queues > 1 {
		if multiWhy != "" {
			log.Info("tun queues: 1", "name", l.name, "asked", cfg.Queues, "reason", multiWhy)
		} else {
			log.Info("tun queues", "name", l.name, "queues", 1+len(l.extra))
		}
	}
	return l, nil
}

// openQueues opens n queues of one multi-queue TUN device, non-blocking,
// the first creating it (TUNSETIFF with IFF_MULTI_QUEUE on each).
func openQueues(name string, n int) ([]*os.File, error) {
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for i := range n {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("open /dev/net/tun: %w", err))
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fail(err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fail(fmt.Errorf("TUNSETIFF with IFF_MULTI_QUEUE, queue %d: %w", i, err))
		}
		if i == 0 {
			// A template name ("tun%d") is resolved by the first queue.
			name = ifr.Name()
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return fail(err)
		}
		files = append(files, os.NewFile(uintptr(fd), "/dev/net/tun"))
	}
	return files, nil
}

// setupQueues puts the extra queues of a multi-queue device on the
// superpacket path; without offload they are closed again.
func (l *Linux) setupQueues() error {
	files := l.files
	l.files = nil
	if len(files) == 0 {
		return nil
	}
	if !l.offload {
		for _, f := range files {
			f.Close()
		}
		return errors.New("the extra queues need tun offload")
	}
	for i, f := range files {
		q := &Queue{l: l, index: i + 1}
		if err := q.q.init(f); err != nil {
			for _, g := range files[i:] {
				g.Close()
			}
			return fmt.Errorf("queue %d: %w", i+1, err)
		}
		l.extra = append(l.extra, q)
	}
	return nil
}

// tcpOffloads are the offloads the superpacket path asks the kernel for.
// UDP segmentation (TUN_F_USO4/6) is left out: the path takes TCP
// superpackets only, so the kernel segments UDP before the TUN.
const tcpOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// enableOffload turns the superpacket path on, or returns why it cannot.
func (l *Linux) enableOffload() (why string) {
	f, ok := l.dev.(interface{ File() *os.File })
	if !ok {
		return "the device gives no access to its file descriptor"
	}
	if l.dev.BatchSize() <= 1 {
		return "the kernel refused IFF_VNET_HDR or TCP offloads"
	}
	if err := l.q0.init(f.File()); err != nil {
		return err.Error()
	}
	l.offload = true
	return ""
}

// queue is one descriptor of the device on the superpacket path.
type queue struct {
	file *os.File
	rc   syscall.RawConn
}

// init takes f, setting the TCP offloads on it.
func (q *queue) init(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tcpOffloads) }); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("TUNSETOFFLOAD: %w", ierr)
	}
	q.file, q.rc = f, rc
	return nil
}

func (c Config) mtu() (int, error) {
	switch {
	case c.MTU == 0:
		return DefaultMTU, nil
	case c.MTU < 68 || c.MTU > maxPacket:
		return 0, fmt.Errorf("tun: mtu %d out of range [68, %d]", c.MTU, maxPacket)
	}
	return c.MTU, nil
}

// setup configures the device with netlink. It runs on the calling
// goroutine because netlink sockets are opened in the namespace of the
// current thread.
func (l *Linux) setup(cfg Config) error {
	name := l.name
	if mtu, err := l.dev.MTU(); err == nil {
		l.mtu = mtu
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("tun: look up link %s: %w", name, err)
	}
	l.index = link.Attrs().Index
	for _, p := range cfg.Addresses {
		if err := addAddress(link, p); err != nil {
			return fmt.Errorf("tun: add address %s to %s: %w", p, name, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("tun: set %s up: %w", name, err)
	}
	for _, p := range cfg.Routes {
		if err := addRoute(l.index, p); err != nil {
			return fmt.Errorf("tun: add route %s via %s: %w", p, name, err)
		}
	}
	return nil
}

func addAddress(link netlink.Link, p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("invalid prefix")
	}
	addr := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Unmap().Is6() {
		// Without NODAD the address stays tentative for about a second
		// and the kernel refuses to use it as a source.
		addr.Flags = unix.IFA_F_NODAD
	}
	return netlink.AddrAdd(link, addr)
}

func addRoute(index int, p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("invalid prefix")
	}
	r := &netlink.Route{LinkIndex: index, Dst: ipNet(p.Masked())}
	if p.Addr().Is4() {
		// What `ip route add P dev tun0` uses: the destination is on-link.
		r.Scope = netlink.SCOPE_LINK
	}
	return netlink.RouteAdd(r)
}

// ipNet converts p keeping the host bits, which matter for addresses.
func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// drainEvents consumes wgtun's event channel, whose producers block when its
// small buffer is full; the channel is closed by wgtun after Close.
func (l *Linux) drainEvents() {
	defer close(l.eventsDone)
	for ev := range l.dev.Events() {
		l.log.Debug("tun event", "name", l.name, "event", ev)
	}
}

// Read implements Device.Read. offset must be at least 0; Headroom is what
// ReadLoop uses.
func (l *Linux) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := l.dev.Read(bufs, sizes, offset)
	if err == nil {
		return n, nil
	}
	if l.closed.Load() {
		// wgtun may report its netlink listener's shutdown instead.
		return 0, fmt.Errorf("tun: read %s: %w", l.name, os.ErrClosed)
	}
	if errors.Is(err, wgtun.ErrTooManySegments) {
		l.logTooManySegments(len(bufs))
		return n, err
	}
	return n, fmt.Errorf("tun: read %s: %w", l.name, err)
}

// logTooManySegments logs the 1st, 2nd, 4th, 8th... occurrence so a steady
// overload cannot flood the log.
func (l *Linux) logTooManySegments(batch int) {
	c := l.tooManySegments.Add(1)
	if c&(c-1) == 0 {
		l.log.Warn("tun: GSO packet had more segments than read buffers; rest dropped",
			"name", l.name, "buffers", batch, "occurrences", c)
	}
}

// Write implements Device.Write. offset must be at least 10 (the
// virtio-net header); callers use Headroom. Packets may be coalesced (GRO)
// in place, using spare capacity after each packet. On error the count is
// 0 even if some packets went out, because wgtun does not say which did.
func (l *Linux) Write(bufs [][]byte, offset int) (int, error) {
	if l.closed.Load() {
		return 0, fmt.Errorf("tun: write %s: %w", l.name, os.ErrClosed)
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("tun: write %s: offset %d: %w", l.name, offset, ErrShortHeadroom)
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	l.scratch = append(l.scratch[:0], bufs...)
	_, err := l.dev.Write(l.scratch, offset)
	clear(l.scratch) // do not pin the caller's buffers
	if err != nil {
		if l.closed.Load() {
			err = os.ErrClosed
		}
		return 0, fmt.Errorf("tun: write %d packets to %s: %w", len(bufs), l.name, err)
	}
	return len(bufs), nil
}

// Offloads implements OffloadDevice.Offloads.
func (l *Linux) Offloads() bool { return l.offload }

var errNoOffload = errors.New("offload is off")

// ReadOffload implements OffloadDevice.ReadOffload on the first queue.
func (l *Linux) ReadOffload(bufs [][]byte, sizes []int, offset int) (int, error) {
	if !l.offload {
		return 0, fmt.Errorf("tun: read %s: %w", l.name, errNoOffload)
	}
	return l.q0.read(l, bufs, sizes, offset)
}

// WriteOffload implements OffloadDevice.WriteOffload on the first queue.
func (l *Linux) WriteOffload(bufs [][]byte, offset int) (int, error) {
	if !l.offload {
		return 0, fmt.Errorf("tun: write %s: %w", l.name, errNoOffload)
	}
	return l.q0.write(l, bufs, offset)
}

// read is ReadOffload on q: one read(2) per packet straight into bufs
// (no copy, no split), the first waiting in the runtime's poller, the
// others only while packets are queued.
func (q *queue) read(l *Linux, bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("tun: read %s: offset %d: %w", l.name, offset, ErrShortHeadroom)
	}
	n := 0
	for n < len(bufs) {
		buf := bufs[n][offset-virtio.HdrLen:]
		var got int
		var err error
		wait := n == 0
		cerr := q.rc.Read(func(fd uintptr) bool {
			for {
				got, err = unix.Read(int(fd), buf)
				if err != unix.EINTR {
					break
				}
			}
			return !(wait && err == unix.EAGAIN)
		})
		switch {
		case cerr != nil || l.closed.Load() || errors.Is(err, unix.EBADFD):
			if n > 0 {
				return n, nil
			}
			return 0, fmt.Errorf("tun: read %s: %w", l.name, os.ErrClosed)
		case err == unix.EAGAIN:
			return n, nil
		case err != nil:
			if n > 0 {
				return n, nil // the next call sees it again, or not
			}
			return 0, fmt.Errorf("tun: read %s: %w", l.name, err)
		case got < virtio.HdrLen:
			continue // nothing after the header: not a packet
		}
		sizes[n] = got - virtio.HdrLen
		n++
	}
	return n, nil
}

// write is WriteOffload on q: one write(2) per packet, header included,
// waiting in the runtime's poller when the queue is full.
func (q *queue) write(l *Linux, bufs [][]byte, offset int) (int, error) {
	if l.closed.Load() {
		return 0, fmt.Errorf("tun: write %s: %w", l.name, os.ErrClosed)
	}
	if offset < virtio.HdrLen {
		return 0, fmt.Errorf("tun: write %s: offset %d: %w", l.name, offset, ErrShortHeadroom)
	}
	n := 0
	var first error
	for _, b := range bufs {
		_, err := q.file.Write(b[offset-virtio.HdrLen:])
		if err == nil {
			n++
			continue
		}
		if l.closed.Load() || errors.Is(err, unix.EBADFD) || errors.Is(err, os.ErrClosed) {
			return n, fmt.Errorf("tun: write %s: %w", l.name, os.ErrClosed)
		}
		if first == nil {
			first = fmt.Errorf("tun: write a %d-byte packet to %s: %w", len(b)-offset, l.name, err)
		}
	}
	return n, first
}

// Queues returns the device's queues, the first being l itself: one
// unless Config.Queues asked for more and got them.
func (l *Linux) Queues() []OffloadDevice {
	qs := []OffloadDevice{l}
	for _, q := range l.extra {
		qs = append(qs, q)
	}
	return qs
}

// Queue is a queue after the first of a multi-queue device. It moves
// packets on the superpacket path only: Read and Write fail. Closing it
// closes its descriptor; closing the device closes every queue.
type Queue struct {
	l         *Linux
	index     int
	q         queue
	closeOnce sync.Once
}

var _ OffloadDevice = (*Queue)(nil)

var errQueueOffloadOnly = errors.New("an extra queue moves packets with ReadOffload and WriteOffload only")

// Read implements Device.Read: it fails.
func (q *Queue) Read([][]byte, []int, int) (int, error) {
	return 0, fmt.Errorf("tun: read %s queue %d: %w", q.l.name, q.index, errQueueOffloadOnly)
}

// Write implements Device.Write: it fails.
func (q *Queue) Write([][]byte, int) (int, error) {
	return 0, fmt.Errorf("tun: write %s queue %d: %w", q.l.name, q.index, errQueueOffloadOnly)
}

// Offloads implements OffloadDevice.Offloads: always.
func (q *Queue) Offloads() bool { return true }

// ReadOffload implements OffloadDevice.ReadOffload.
func (q *Queue) ReadOffload(bufs [][]byte, sizes []int, offset int) (int, error) {
	return q.q.read(q.l, bufs, sizes, offset)
}

// WriteOffload implements OffloadDevice.WriteOffload.
func (q *Queue) WriteOffload(bufs [][]byte, offset int) (int, error) {
	return q.q.write(q.l, bufs, offset)
}

// BatchSize implements Device.BatchSize.
func (q *Queue) BatchSize() int { return q.l.BatchSize() }

// MTU implements Device.MTU.
func (q *Queue) MTU() int { return q.l.mtu }

// Name implements Device.Name.
func (q *Queue) Name() string { return q.l.name }

// Close closes the queue's descriptor; the device stays.
func (q *Queue) Close() error {
	var err error
	q.closeOnce.Do(func() { err = q.q.file.Close() })
	return err
}

// BatchSize implements Device.BatchSize: 128 with offloads, else 1.
func (l *Linux) BatchSize() int { return l.dev.BatchSize() }

// MTU implements Device.MTU.
func (l *Linux) MTU() int { return l.mtu }

// Name implements Device.Name.
func (l *Linux) Name() string { return l.name }

// Index returns the interface index, for routes and rules set up elsewhere.
func (l *Linux) Index() int { return l.index }

// Close closes the TUN file descriptor, which deletes the (non-persistent)
// interface together with its addresses and routes, unblocks a pending
// Read, and waits for the device's internal goroutines. It is idempotent.
func (l *Linux) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		for _, q := range l.extra {
			q.Close()
		}
		for _, f := range l.files {
			f.Close()
		}
		if err := l.dev.Close(); err != nil {
			l.closeErr = fmt.Errorf("tun: close %s: %w", l.name, err)
		}
		<-l.eventsDone
	})
	return l.closeErr
}
