package tcp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/internal/virtio"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/udp"
)

// Options configure an Engine. Start from DefaultOptions: zero numeric
// fields take their defaults, but the TCB's option switches (window
// scaling, SACK, timestamps) are used as given.
type Options struct {
	// MTU of the TUN; it bounds the MSS we announce (MTU-40 for IPv4,
	// MTU-60 for IPv6). Default 1500.
	MTU int
	// TCB holds the per-connection tunables. MSS is derived from MTU.
	TCB Config
	// SynBacklog bounds connections in SYN-RECEIVED (SYN-ACK sent, third
	// ACK not yet in). Default 1024.
	SynBacklog int
	// PendingBacklog bounds SYNs waiting for the handler's decision (its
	// upstream dial). Default 1024. When either backlog is full, new SYNs
	// are answered with SYN cookies (RFC 4987 §3.6) instead of being
	// dropped.
	PendingBacklog int
	// MaxTimeWait bounds connections in TIME-WAIT. Default 65536. When
	// the table is full, a connection that would enter TIME-WAIT closes
	// once its last ACK is out, as Linux does past tcp_max_tw_buckets:
	// memory stays bounded at any connect rate, and only the 2·MSL
	// protection against old duplicates is given up for the overflow.
	MaxTimeWait int
	// ChallengeAckGlobalLimit bounds the RFC 5961 §7 challenge ACKs of
	// all connections together, per second, besides TCB.ChallengeAckLimit
	// per connection. Zero means 1000 (Linux's tcp_challenge_ack_limit of
	// old); negative means no limit across connections.
	ChallengeAckGlobalLimit int
	// AlwaysSYNCookies answers every SYN with a SYN cookie, not only when
	// a backlog is full (Linux's tcp_syncookies=2); for tests and script
	// runners.
	AlwaysSYNCookies bool
	// UDP configures the UDP flow table.
	UDP udp.Options
	// Trace, when set, receives every segment, transition and drop of the
	// connections its Match accepts.
	Trace *Tracer
	// Logger receives debug lines per connection and drop; nil discards.
	Logger *slog.Logger

	// Clock is the engine's time: every TCB reads it, and its one
	// timer runs the TCBs' timers and the Conns' deadlines. Nil means
	// clock.Real(); tests and script runners pass a *clock.Manual and
	// drive the engine in virtual time with Advance and Set.
	Clock clock.Clock
}

// DefaultMaxTimeWait is Options.MaxTimeWait's default: at ~1.4 KB of heap
// per TIME-WAIT connection (a frozen record, see timewait.go), about
// 90 MB at most.
const DefaultMaxTimeWait = 65536

// DefaultChallengeAckGlobalLimit is the default of
// Options.ChallengeAckGlobalLimit.
const DefaultChallengeAckGlobalLimit = 1000

// DefaultOptions enables every TCP option and leaves the rest to the
// documented defaults.
func DefaultOptions() Options {
	return Options{MTU: 1500, TCB: DefaultConfig()}
}

// Engine is tungate's own TCP/IP engine behind the stack contract. It
// terminates TCP with a TCB per connection, relays UDP flows through
// stack/udp and answers ICMP echo for every address.
//
// Concurrency: DeliverInbound runs on the TUN reader's goroutine; Conn
// methods run on the proxy's goroutines; the callback of one clock.Timer
// runs the TCBs' timers (on a runtime goroutine with the real clock, on
// the goroutine advancing a manual one). Each flow's TCB is guarded by
// its flow's mutex; the flow table by e.mu. Lock order: e.timers.runMu,
// flow.mu, then e.mu or e.timers.mu; the clock's own locks come last
// (the timer is reset under e.timers.mu), which holds because a Clock
// calls back with none of its locks held. Engine code never advances a
// manual clock: its callbacks run on the advancing goroutine.
type Engine struct {
	cfg      Config // per-TCB config with defaults applied; shared by every TCB
	cfg6     Config // the same for IPv6 (smaller MSS)
	opts     Options
	w        stack.PacketWriter
	ow       stack.OffloadWriter // w on the superpacket path, else nil
	h        stack.Handler
	log      *slog.Logger
	isn      *isnGenerator
	cookies  *cookieJar
	udp      *udp.Table
	counters Counters
	ec       engineCounters
	clk      clock.Clock
	tsEpoch  clock.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // handler goroutines and running timer callbacks

	mu       sync.RWMutex // guards flows, pending, synRcvd, timeWait, closed
	flows    map[stack.FlowID]*flow
	pending  int // flows waiting for the handler's decision
	synRcvd  int // flows in SYN-RECEIVED
	timeWait int // flows in TIME-WAIT
	closed   bool

	timers timerQueue

	lastCookie atomic.Int64 // clock.Time of the last SYN cookie sent; 0 if none

	batches sync.Pool // *outBatch
}

var _ stack.OffloadStack = (*Engine)(nil)

// New builds an engine that writes packets to w and hands new flows to h.
func New(w stack.PacketWriter, h stack.Handler, opts Options) (*Engine, error) {
	if opts.MTU == 0 {
		opts.MTU = 1500
	}
	if opts.MTU < 1280 || opts.MTU > 65535 {
		return nil, fmt.Errorf("tcp: MTU %d out of range [1280, 65535]", opts.MTU)
	}
	if opts.SynBacklog <= 0 {
		opts.SynBacklog = 1024
	}
	if opts.PendingBacklog <= 0 {
		opts.PendingBacklog = 1024
	}
	if opts.MaxTimeWait <= 0 {
		opts.MaxTimeWait = DefaultMaxTimeWait
	}
	if _, err := newCongestionControl(opts.TCB.CongestionControl, 1460, 0); err != nil {
		return nil, err
	}
	isn, err := newISNGenerator()
	if err != nil {
		return nil, err
	}
	cookies, err := newRandomCookieJar()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		opts: opts, w: w, h: h, log: opts.Logger, isn: isn, cookies: cookies,
		flows: make(map[stack.FlowID]*flow), clk: opts.Clock,
	}
	if ow, ok := w.(stack.OffloadWriter); ok && ow.Offloads() {
		e.ow = ow
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if e.clk == nil {
		e.clk = clock.Real()
	}
	e.tsEpoch = e.clk.Now()
	e.cfg = opts.TCB
	e.cfg.MSS = opts.MTU - 40
	e.cfg.TSEpoch = e.tsEpoch
	e.cfg.Stats = &e.counters
	switch {
	case opts.ChallengeAckGlobalLimit == 0:
		e.cfg.ChallengeAcks = NewChallengeLimiter(DefaultChallengeAckGlobalLimit)
	case opts.ChallengeAckGlobalLimit > 0:
		e.cfg.ChallengeAcks = NewChallengeLimiter(opts.ChallengeAckGlobalLimit)
	}
	e.cfg.SetDefaults()
	e.cfg6 = e.cfg
	e.cfg6.MSS = opts.MTU - 60
	e.cfg6.DefaultSendMSS = 1220 // RFC 8200 §5 minimum MTU 1280 - 60
	e.ctx, e.cancel = context.WithCancel(context.Background())
	if opts.UDP.Clock == nil {
		opts.UDP.Clock = e.clk // one clock for the UDP flows' deadlines too
	}
	e.udp = udp.New(w, h, opts.UDP)
	e.batches.New = func() any { return newOutBatch(e) }
	e.timers.init(e.clk, e.fireTimers)
	e.opts.Trace.useClock(e.clk)
	return e, nil
}

// config returns the TCB config for the flow's address family.
func (e *Engine) config(id stack.FlowID) *Config {
	if id.Dst.Addr().Is4() {
		return &e.cfg
	}
	return &e.cfg6
}

// DeliverInbound parses and processes packets from the TUN. It copies
// what it keeps. Malformed and unsupported packets are counted and
// dropped.
func (e *Engine) DeliverInbound(pkts [][]byte) error { return e.deliver(pkts, false) }

// DeliverInboundOffload implements stack.OffloadStack: each packet
// starts with its virtio-net header. A TCP superpacket is one segment to
// the TCB (RFC 9293 puts no upper bound on a received segment but the
// window; the kernel's GRO hands its own stack the same). Its checksum,
// and that of any packet marked NEEDS_CSUM or DATA_VALID, is not
// verified: the packet never left this machine, or the kernel verified
// it.
func (e *Engine) DeliverInboundOffload(pkts [][]byte) error { return e.deliver(pkts, true) }

func (e *Engine) deliver(pkts [][]byte, vnet bool) error {
	return e.inputBatch(len(pkts), func(i int) (packet.Packet, error) { return e.parse(pkts[i], vnet) })
}

// deliverParsed is deliver for packets parsed already (Shards).
func (e *Engine) deliverParsed(ps []packet.Packet) error {
	return e.inputBatch(len(ps), func(i int) (packet.Packet, error) { return ps[i], nil })
}

// inlineNotifyLimit is the most payload a batch read from the TUN may
// carry for its flows' SetNotifyAfter functions to run on the reading
// goroutine: small exchanges save a goroutine's start on their round
// trip, bulk data keeps the reader and the relays running side by side.
const inlineNotifyLimit = 16 << 10

// inputBatch hands n packets, packet i from get, to their protocols as one
// batch read from the TUN, and writes the batch's output at the end.
func (e *Engine) inputBatch(n int, get func(i int) (packet.Packet, error)) error {
	if e.isClosed() {
		return net.ErrClosed
	}
	b := e.getBatch()
	b.coalesce, b.input = true, true
	for i := range n {
		e.ec.packetsIn.Add(1)
		p, err := get(i)
		if err != nil {
			e.dropMalformed(err)
			continue
		}
		b.inBytes += len(p.Payload)
		e.inputPacket(p, b)
	}
	b.coalesce = false
	b.runDeferred(e.clk.Now())
	b.input = false
	b.flush()
	// The batch is out and no lock is held: the flows' SetNotifyAfter
	// functions may now use their Conns.
	// A batch that carried bulk data leaves the relays to their own
	// goroutines, so that reading the TUN and writing upstream overlap.
	bulk := b.inBytes > inlineNotifyLimit
	b.inBytes = 0
	for i, f := range b.notifyQ {
		f.mu.Lock()
		fn := f.wait.after
		if bulk {
			fn = f.wait.notify
		}
		f.notifyQueued = false
		f.mu.Unlock()
		if fn != nil {
			fn()
		}
		b.notifyQ[i] = nil
	}
	b.notifyQ = b.notifyQ[:0]
	e.putBatch(b)
	return nil
}

func (e *Engine) isClosed() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.closed
}

// parse parses a packet read from the TUN, after its virtio-net header
// when vnet.
func (e *Engine) parse(raw []byte, vnet bool) (packet.Packet, error) {
	if vnet {
		return e.parseOffload(raw)
	}
	return packet.ParseIP(raw)
}

func (e *Engine) dropMalformed(err error) {
	e.ec.malformed.Add(1)
	e.log.Debug("tcp: drop malformed packet", "err", err)
}

// inputPacket hands a packet to its protocol.
func (e *Engine) inputPacket(p packet.Packet, b *outBatch) {
	switch p.Proto {
	case packet.ProtoTCP:
		e.inputTCP(p, b)
	case packet.ProtoUDP:
		e.udp.Deliver(p)
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		e.inputICMP(p, b)
	default:
		e.ec.unsupported.Add(1)
	}
}

// parseOffload parses a packet read with its virtio-net header.
func (e *Engine) parseOffload(raw []byte) (packet.Packet, error) {
	if len(raw) < virtio.HdrLen {
		return packet.Packet{}, fmt.Errorf("%d bytes, less than a virtio-net header", len(raw))
	}
	h := virtio.Decode(raw)
	raw = raw[virtio.HdrLen:]
	parse := packet.ParseIP
	if h.ChecksumTrusted() {
		parse = packet.ParseIPTrusted
	}
	p, err := parse(raw)
	if err != nil || !h.IsGSO() {
		return p, err
	}
	if p.Proto != packet.ProtoTCP {
		return packet.Packet{}, fmt.Errorf("%w: a superpacket of protocol %d", virtio.ErrGSOType, p.Proto)
	}
	if err := h.CheckInbound(p.IP, len(p.IP)-len(p.Transport)); err != nil {
		return packet.Packet{}, err
	}
	e.ec.superpacketsIn.Add(1)
	return p, nil
}

// inputICMP answers echo requests for any destination; everything else
// ICMP is dropped.
func (e *Engine) inputICMP(p packet.Packet, b *outBatch) {
	buf := b.next()
	n, err := packet.EchoReply(buf[stack.Headroom:], p)
	if err != nil {
		e.ec.icmpDropped.Add(1)
		return
	}
	e.ec.icmpEchoReplies.Add(1)
	b.commit(n)
}

// Close aborts every connection (RST to the app), ends UDP flows, stops
// the engine's timer and waits for every handler, and a timer callback
// already running, to return.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	flows := make([]*flow, 0, len(e.flows))
	for _, f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.Unlock()
	e.cancel()

	b := e.getBatch()
	for _, f := range flows {
		f.shutdown(b)
	}
	e.putBatch(b)
	e.timers.stop()
	err := e.udp.Close()
	e.wg.Wait()
	return err
}

// tsOffset is the random per-connection offset of our timestamp clock
// (RFC 7323 §5.4: it must not reveal uptime and should differ per
// connection).
func tsOffset() uint32 { return rand.Uint32() }

var errEngineClosed = fmt.Errorf("tcp: engine closed: %w", net.ErrClosed)

// engineCounters are the engine-level events that no TCB sees.
type engineCounters struct {
	packetsIn, packetsOut, malformed, unsupported, writeErrors atomic.Uint64
	icmpEchoReplies, icmpDropped, buildErrors                  atomic.Uint64
	syns, synRetransAbsorbed, rstsNoFlow, rstsSentNoFlow       atomic.Uint64
	droppedNoFlow                                              atomic.Uint64
	cookiesSent, cookiesValid, cookiesInvalid                  atomic.Uint64
	accepted, rejected, handlerUndecided                       atomic.Uint64
	timeWaitOverflows                                          atomic.Uint64
	superpacketsIn, superpacketsOut                            atomic.Uint64
}
