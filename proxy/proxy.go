// Package proxy relays the flows a userspace stack terminates to upstream
// sockets. It implements stack.Handler the same way for every stack: a
// policy check, an upstream dial, and only then the answer to the app's
// SYN — Accept when the upstream connected, a RST (Reject(true)) when it
// refused or did not answer — so the app sees the upstream's handshake
// outcome. Established flows are relayed with faithful teardown: a FIN
// from one side becomes a half-close towards the other, a RST becomes an
// abort.
//
// Upstream connections come from a Dialer: the kernel's sockets
// (NewDirect, with fwmark and interface binding), a SOCKS5 proxy
// (NewSOCKS5) or an HTTP CONNECT proxy (NewHTTP).
package proxy

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/stack"
)

// Defaults for zero Options fields.
const (
	// DefaultConnectTimeout bounds the upstream dial and the app's
	// handshake; the app's own connect() typically gives up after about
	// two minutes of SYN retries, so ten seconds answers well before.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultIdleTimeout aborts a TCP relay that carried no byte either
	// way for this long. Five minutes is about what NAT gateways keep an
	// idle mapping (AWS: 350 s), so apps that need longer already send
	// keepalives, while relays whose peers vanished silently are freed.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultHalfCloseTimeout aborts a half-closed relay whose open
	// direction stays silent this long, like Linux's tcp_fin_timeout
	// (60 s) bounds FIN_WAIT_2.
	DefaultHalfCloseTimeout = 60 * time.Second
	// DefaultUDPIdleTimeout ends a UDP session without datagrams either
	// way for this long: RFC 4787 REQ-5 asks a NAT to keep an idle UDP
	// mapping at least two minutes and recommends five.
	DefaultUDPIdleTimeout = 5 * time.Minute
	// DefaultSniffTimeout is how long a sniffed flow waits for the app's
	// first bytes: clients of TLS and HTTP send at once; a protocol in
	// which the server speaks first waits this long once.
	DefaultSniffTimeout = 300 * time.Millisecond
)

// Options configure a Proxy. For the timeouts, zero means the default and
// a negative value means none.
type Options struct {
	// Dialer opens the upstream TCP connections; nil means NewDirect
	// with no options.
	Dialer Dialer
	// UDPDialer opens upstream UDP sockets, dialed with network "udp".
	// Nil disables UDP: every UDP flow is dropped.
	UDPDialer Dialer
	// ConnectTimeout bounds the upstream dial and then, separately, the
	// completion of the app's handshake.
	ConnectTimeout time.Duration
	// IdleTimeout aborts (RST both ways) a TCP relay that carried no
	// payload in either direction for this long.
	IdleTimeout time.Duration
	// HalfCloseTimeout applies once one direction has finished with a
	// FIN: when the other direction then carries nothing for this long,
	// both sides are aborted. Data still flowing keeps a half-closed
	// relay alive, so a client that shuts its sending side and then
	// downloads for an hour is not cut off.
	HalfCloseTimeout time.Duration
	// UDPIdleTimeout ends a UDP session with no datagram either way for
	// this long.
	UDPIdleTimeout time.Duration
	// UDPNAT is how UDP flows map onto upstreams; the zero value is
	// NATFullCone.
	UDPNAT NATMode
	// MaxUDPSessions bounds the UDP sessions open; past it the least
	// recently used one is ended (Stats.UDPEvicted, a warning at most
	// every 10 s). Zero means DefaultMaxUDPSessions.
	MaxUDPSessions int
	// Policy, when set, is asked about every flow (TCP and UDP) before it
	// is dialed; a non-nil error refuses it: a RST for TCP, a drop for
	// UDP. It is called concurrently.
	Policy func(stack.FlowID) error
	// Router, when set, chooses each flow's outbound (after Policy):
	// its dialer, or reject or drop. Without it every flow uses Dialer or
	// UDPDialer.
	Router Router
	// SniffTimeout bounds the wait for a sniffed flow's first bytes;
	// zero means DefaultSniffTimeout.
	SniffTimeout time.Duration
	// Logger receives per-flow debug logs; nil discards them.
	Logger *slog.Logger
	// Observer, when set, receives the Events of every TCP flow.
	Observer Observer
	// Clock drives the timeouts and stamps the Events; nil means the
	// system's (clock.Real).
	Clock clock.Clock
	// MaxConnections bounds the TCP flows in progress (dialing or
	// relaying; each holds an upstream socket). A SYN past it gets a RST
	// at once, is counted in Stats.TCPLimitRejected and logged as a
	// warning at most every 10 s. Zero means no limit: set it below the
	// open-file limit, or dials fail with EMFILE instead (also a RST,
	// counted in Stats.TCPFDExhausted and warned about).
	MaxConnections int
}

// Proxy is a stack.Handler that relays flows upstream. Its methods are
// safe for concurrent use.
type Proxy struct {
	dialer, udpDialer Dialer
	lim               atomic.Pointer[limits] // SetLimits replaces it
	udp               *udpTable
	udpWarn           warner // MaxUDPSessions reached
	policy            func(stack.FlowID) error
	router            Router
	sniffTimeout      time.Duration
	log               *slog.Logger
	observer          Observer
	clock             clock.Clock
	limitWarn         warner // MaxConnections reached
	fdWarn            warner // EMFILE/ENFILE on a dial

	stats            counters
	conns            connTable // the flows relayed now
	tcpBufs, udpBufs bufPool

	// ctx is cancelled by Close; every flow's context derives from it.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex // guards closed, the fields below and the Add side of flows
	closed bool
	// evented relays flows by events where both sides allow it (see
	// evrelay.go); the proxy's tests turn it off to test tcpRelay.
	evented   bool
	poller    *poller // made by the first evented relay
	pollerErr error
	relays    map[*evRelay]struct{} // the evented relays running
	// flows counts the handler calls running in the proxy; Close waits
	// for them.
	flows sync.WaitGroup
}

var _ stack.Handler = (*Proxy)(nil)

// New returns a Proxy configured by o.
func New(o Options) *Proxy {
	if o.Dialer == nil {
		o.Dialer = NewDirect(DirectOptions{})
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		dialer:       o.Dialer,
		udpDialer:    o.UDPDialer,
		policy:       o.Policy,
		router:       o.Router,
		sniffTimeout: orDefault(o.SniffTimeout, DefaultSniffTimeout),
		log:          o.Logger,
		observer:     o.Observer,
		clock:        o.Clock,
		ctx:          ctx,
		cancel:       cancel,
		tcpBufs:      bufPool{size: tcpBufSize},
		udpBufs:      bufPool{size: udpBufSize},
		evented:      true,
		relays:       make(map[*evRelay]struct{}),
	}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if p.clock == nil {
		p.clock = clock.Real()
	}
	p.limitWarn = warner{clk: p.clock, every: warnInterval}
	p.fdWarn = warner{clk: p.clock, every: warnInterval}
	p.udpWarn = warner{clk: p.clock, every: warnInterval}
	p.udp = newUDPTable(p.clock, o.MaxUDPSessions)
	p.SetLimits(o.Limits())
	return p
}

// Limits are the Options a running Proxy can change (SetLimits), with
// the same meaning and defaults.
type Limits struct {
	ConnectTimeout, IdleTimeout, HalfCloseTimeout, UDPIdleTimeout time.Duration
	MaxConnections, MaxUDPSessions                                int
	UDPNAT                                                        NATMode
}

// Limits returns o's limits.
func (o Options) Limits() Limits {
	return Limits{ConnectTimeout: o.ConnectTimeout, IdleTimeout: o.IdleTimeout, HalfCloseTimeout: o.HalfCloseTimeout,
		UDPIdleTimeout: o.UDPIdleTimeout, MaxConnections: o.MaxConnections, MaxUDPSessions: o.MaxUDPSessions, UDPNAT: o.UDPNAT}
}

// limits are Limits with the defaults filled in.
type limits struct {
	connectTimeout, idleTimeout, halfCloseTimeout, udpIdleTimeout time.Duration
	maxConns                                                      int
	udpNAT                                                        NATMode
}

// SetLimits applies l to the flows that start from now on (a config
// reload): a running flow keeps the idle timeout it started with, and
// takes the half-close timeout in force when its first FIN passes. A
// lower MaxUDPSessions ends the least recently used sessions past it at
// once; a lower MaxConnections only refuses new flows.
func (p *Proxy) SetLimits(l Limits) {
	p.lim.Store(&limits{
		connectTimeout:   orDefault(l.ConnectTimeout, DefaultConnectTimeout),
		idleTimeout:      orDefault(l.IdleTimeout, DefaultIdleTimeout),
		halfCloseTimeout: orDefault(l.HalfCloseTimeout, DefaultHalfCloseTimeout),
		udpIdleTimeout:   orDefault(l.UDPIdleTimeout, DefaultUDPIdleTimeout),
		maxConns:         l.MaxConnections,
		udpNAT:           l.UDPNAT,
	})
	for _, v := range p.udp.setMax(l.MaxUDPSessions) {
		p.evict(v)
	}
}

func (p *Proxy) limits() *limits { return p.lim.Load() }

// orDefault maps zero to def and negative values to 0 (no timeout).
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	s := p.stats.snapshot()
	s.TCPLargeBuffers = p.tcpBufs.out.Load()
	return s
}

// Close aborts every relay (RST to both sides), fails dials in progress
// (their apps get a RST), and waits until every HandleTCP and HandleUDP
// call has returned. Flows arriving afterwards are rejected with a RST
// (TCP) or dropped (UDP). Close is idempotent and returns nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for r := range p.relays {
		r.interrupt(intrAbort)
	}
	p.mu.Unlock()
	p.cancel()
	p.flows.Wait()
	p.mu.Lock()
	pl := p.poller
	p.poller = nil
	p.mu.Unlock()
	if pl != nil {
		pl.close()
	}
	return nil
}

// begin registers a handler call. The returned context is done when ctx
// is or the proxy closes; end must be called when the handler returns.
// ok is false once the proxy is closed.
func (p *Proxy) begin(ctx context.Context) (fctx context.Context, end func(), ok bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nil, false
	}
	p.flows.Add(1)
	p.mu.Unlock()
	fctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.ctx, cancel)
	return fctx, func() {
		stop()
		cancel()
		p.flows.Done()
	}, true
}

// withTimeout returns a context that is cancelled with cause once d has
// passed on the proxy's clock (never when d is 0), and its release func.
func (p *Proxy) withTimeout(ctx context.Context, d time.Duration, cause error) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	if d <= 0 {
		return ctx, func() { cancel(context.Canceled) }
	}
	stop := p.clock.AfterFunc(d, func() { cancel(cause) }).Stop
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

func (p *Proxy) emit(e Event) {
	if p.observer == nil {
		return
	}
	e.Time = p.clock.Now()
	p.observer(e)
}

// Buffers for the relays. A pooled pointer avoids an allocation per Put.
const (
	tcpBufSize = 32 << 10
	udpBufSize = 64 << 10 // the largest UDP payload fits
)

// bufPool hands out buffers of one size.
type bufPool struct {
	size int
	pool sync.Pool
	out  atomic.Int64 // buffers handed out and not yet put back
}

func (b *bufPool) get() *[]byte {
	b.out.Add(1)
	if v, ok := b.pool.Get().(*[]byte); ok {
		return v
	}
	buf := make([]byte, b.size)
	return &buf
}

func (b *bufPool) put(buf *[]byte) {
	b.out.Add(-1)
	b.pool.Put(buf)
}
