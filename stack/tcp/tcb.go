package tcp

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// Config holds the tunables of a control block. One Config is shared by
// many TCBs and must not change while they use it. Zero fields take the
// defaults documented on each field (see DefaultConfig).
type Config struct {
	// MSS is the largest payload we accept: TUN MTU - 40 (IPv4) or - 60
	// (IPv6). It is announced in the SYN-ACK and bounds what we send.
	// Default 1460.
	MSS int
	// DefaultSendMSS is the peer's MSS when its SYN carries none (RFC 9293
	// §3.7.1: 536 for IPv4; the engine sets 1220 for IPv6). Default 536.
	DefaultSendMSS int
	// RecvBufSize is the initial receive buffer (the window); it may grow
	// up to RecvBufMax when the application keeps up. Defaults 64 KiB and
	// 4 MiB.
	RecvBufSize, RecvBufMax int
	// SendBufSize is the send buffer. Default 256 KiB.
	//
	// The buffer sizes are limits, not allocations: memory is allocated
	// as data is buffered (it grows by doubling), released when a
	// direction is finished, and released after BufferIdle on a
	// connection whose buffers are empty.
	SendBufSize int
	// BufferIdle is how long a connection's buffers must stay unused and
	// empty before their memory is released; it is allocated again, small
	// first, when data flows. Default 1 s; negative keeps the memory until
	// the direction ends.
	BufferIdle time.Duration
	// WindowScale, SACK and Timestamps enable the RFC 7323 / RFC 2018
	// options. They are used only when the peer offers them too.
	WindowScale, SACK, Timestamps bool
	// NoDelay disables Nagle's algorithm (RFC 9293 §3.7.4).
	NoDelay bool
	// TailLossProbe enables RFC 8985 §7's tail loss probe (with SACK
	// only): when the ACKs of a flight stop coming, one segment is sent
	// after about two round trips instead of waiting for the RTO.
	TailLossProbe bool
	// DelayedAck is the delayed-ACK timeout; RFC 9293 §3.8.6.3 requires
	// less than 0.5 s. Default 40 ms; negative acknowledges every segment
	// at once.
	DelayedAck time.Duration
	// InitialRTO (default 1 s, RFC 6298 §2.1), MinRTO and MaxRTO bound the
	// retransmission timeout. MinRTO defaults to 200 ms rather than RFC
	// 6298's 1 s: the peer is on the local TUN, RTTs are sub-millisecond,
	// and 200 ms is what Linux uses with no reported harm. MaxRTO
	// defaults to 60 s (RFC 6298 §2.5 allows any value >= 60 s).
	InitialRTO, MinRTO, MaxRTO time.Duration
	// SynAckRetries is how often the SYN-ACK is retransmitted before the
	// connection is given up. Default 5 (about 63 s, as Linux).
	SynAckRetries int
	// MaxRetransmits is how often one segment is retransmitted by timeout
	// before the connection is given up with ETIMEDOUT (RFC 9293 §3.8.3
	// R2). Default 15.
	MaxRetransmits int
	// MSL2 is the TIME-WAIT length, 2·MSL. Default 60 s.
	MSL2 time.Duration
	// FinWait2Timeout bounds FIN-WAIT-2 after the application closed the
	// connection entirely (Close, not CloseWrite). Default 60 s.
	FinWait2Timeout time.Duration
	// KeepaliveIdle > 0 enables keepalives (RFC 9293 §3.8.4) after that
	// much idle time, then every KeepaliveInterval (default 75 s), giving
	// up after KeepaliveCount (default 9) unanswered probes.
	KeepaliveIdle, KeepaliveInterval time.Duration
	KeepaliveCount                   int
	// CongestionControl names the algorithm: "cubic" (default) or
	// "newreno".
	CongestionControl string
	// ChallengeAckLimit is the most RFC 5961 challenge ACKs one connection
	// sends per second (§7). Default 10; negative means no limit.
	ChallengeAckLimit int
	// ChallengeAcks, when set, also bounds the challenge ACKs of every
	// connection sharing it (the engine's Options.ChallengeAckGlobalLimit).
	ChallengeAcks *ChallengeLimiter
	// TSEpoch is the origin of our timestamp clock: TSval = offset +
	// milliseconds since TSEpoch, an instant of the clock the TCBs' now
	// comes from. The engine sets it once so that SYN cookies and TCBs
	// agree; zero means the TCB's creation time.
	TSEpoch clock.Time
	// Stats receives counters; nil disables them.
	Stats *Counters

	defaulted bool
}

// DefaultConfig returns a Config with every option enabled and the
// defaults filled in.
func DefaultConfig() Config {
	c := Config{WindowScale: true, SACK: true, Timestamps: true, TailLossProbe: true}
	c.SetDefaults()
	return c
}

// SetDefaults replaces zero fields with their defaults. Constructors call
// it on a copy when the Config they get has not been through it.
func (c *Config) SetDefaults() {
	c.defaulted = true
	setDef(&c.MSS, 1460)
	setDef(&c.DefaultSendMSS, 536)
	setDef(&c.RecvBufSize, defaultRecvBufSize)
	setDef(&c.RecvBufMax, defaultRecvBufMax)
	c.RecvBufMax = max(c.RecvBufMax, c.RecvBufSize)
	setDef(&c.SendBufSize, 256<<10)
	setDef(&c.BufferIdle, time.Second)
	setDef(&c.DelayedAck, 40*time.Millisecond)
	setDef(&c.InitialRTO, time.Second)
	setDef(&c.MinRTO, 200*time.Millisecond)
	setDef(&c.MaxRTO, 60*time.Second)
	setDef(&c.SynAckRetries, 5)
	setDef(&c.MaxRetransmits, 15)
	setDef(&c.MSL2, 60*time.Second)
	setDef(&c.FinWait2Timeout, 60*time.Second)
	setDef(&c.KeepaliveInterval, 75*time.Second)
	setDef(&c.KeepaliveCount, 9)
	setDef(&c.ChallengeAckLimit, 10)
	if c.CongestionControl == "" {
		c.CongestionControl = "cubic"
	}
}

// Defaults of Config.RecvBufSize and Config.RecvBufMax.
const (
	defaultRecvBufSize = 64 << 10
	defaultRecvBufMax  = 4 << 20
)

func setDef[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Errors returned by Read and Write and reported by Err. Each wraps the
// errno a socket would return, so errors.Is works with syscall and net
// sentinels.
var (
	ErrConnReset   = fmt.Errorf("tcp: connection reset by peer: %w", syscall.ECONNRESET)
	ErrConnRefused = fmt.Errorf("tcp: connection refused: %w", syscall.ECONNREFUSED)
	ErrTimeout     = fmt.Errorf("tcp: connection timed out: %w", syscall.ETIMEDOUT)
	ErrAborted     = fmt.Errorf("tcp: connection aborted: %w", syscall.ECONNABORTED)
	ErrWriteClosed = fmt.Errorf("tcp: write after CloseWrite: %w", net.ErrClosed)
	ErrClosed      = fmt.Errorf("tcp: connection closed: %w", net.ErrClosed)
)

// errNormalClose marks a connection that closed without an error.
var errNormalClose = errors.New("tcp: closed")

// Events is a bitmask of what changed since the last call to TCB.Events.
type Events uint8

// Event bits.
const (
	EventEstablished Events = 1 << iota
	EventReadable           // data or EOF to read
	EventWritable           // send buffer space freed
	EventPeerFIN            // the peer closed its direction
	EventReset              // the connection was reset (by the peer or a timeout)
	EventClosed             // the TCB reached CLOSED
)

// TCB is the transmission control block of one connection: its state, the
// sequence variables of RFC 9293 §3.3.1, buffers and timers. It is
// sans-I/O: it never blocks, starts goroutines, reads the clock or locks.
// Time comes from the caller: Input, Output and OnTimer take now, a reading
// of the owner's clock.Clock that never goes back from one call to the
// next (a non-zero one: the zero clock.Time means "no timer" to Deadline),
// and only they arm timers; Deadline is an instant of that same clock. The application's calls (Read, Write, CloseRead,
// CloseWrite, Close, Abort) take no time and arm nothing: what they start
// (an ACK of a window update, the FIN, the FIN-WAIT-2 timeout after Close)
// happens in the Output the owner runs after them. It is not safe for
// concurrent use: the owner serialises calls.
type TCB struct {
	cfg     *Config
	stats   *Counters
	traceFn func(TraceEvent)

	state       State
	stateReason string
	passive     bool
	err         error      // why the connection ended; nil while it lives
	now         clock.Time // of the last Input, Output or OnTimer

	iss, irs Seq

	// Send sequence space (RFC 9293 §3.3.1). sndMax is the highest
	// sequence sent so far (SND.NXT of RFC 9293 for acceptability);
	// sndNxt goes back to sndUna on a retransmission timeout.
	sndUna, sndNxt, sndMax Seq
	sndWnd                 uint32 // scaled
	maxSndWnd              uint32 // MAX.SND.WND of RFC 5961 §5
	sndWl1, sndWl2         Seq
	sndShift               uint8 // the peer's window scale
	sndMSS                 uint32
	sndBuf                 ring        // bytes from SND.UNA on
	scratch                []byte      // a segment's payload when it wraps in sndBuf; nil until then
	sb                     *scoreboard // what the peer SACKed (RFC 6675); nil until the first block

	finQueued bool // the application closed its direction
	finSent   bool // the FIN has been sent at least once
	finSeq    Seq  // sequence number of our FIN once queued

	// Receive sequence space.
	rcvNxt   Seq
	rcvAdv   Seq        // right edge advertised: RCV.NXT + RCV.WND, never moves left
	rcvShift uint8      // our window scale
	rcvBuf   ring       // unread in-order bytes, then out-of-order bytes at their offset
	ooo      *oooRanges // out-of-order ranges held in rcvBuf; nil until data arrives out of order
	oooFin   bool       // a FIN arrived beyond RCV.NXT
	oooFinAt Seq
	rcvMSS   uint32 // largest segment seen, for the delayed-ACK rule
	finRcvd  bool

	rcvTune // receive-buffer auto-tuning

	readClosed      bool // CloseRead: further data is acknowledged and dropped, never stored
	discardedUnread bool // data was dropped unread after CloseRead
	orphaned        bool // Close: further data resets the connection
	finWait2Arm     bool // Close in FIN-WAIT-2: the next Output arms the timeout with its now

	// Options negotiated on the handshake.
	wsOK, sackOK, tsOK bool
	tsOffset           uint32
	tsEpoch            clock.Time
	tsRecent           uint32
	tsRecentAt         clock.Time
	tsRecentSet        bool
	lastAckSent        Seq

	timers
	rtt
	recovery
	tlp

	// Pending output.
	ackNow     bool
	ackPending uint32 // bytes received and not yet acknowledged
	synDue     bool   // send SYN (SYN-SENT) or SYN-ACK (SYN-RECEIVED)
	rstDue     bool
	rstSeq     Seq // the queued reset: <SEQ=rstSeq><ACK=rstAck><CTL=rstFlags>
	rstAck     Seq
	rstFlags   packet.TCPFlags
	probeDue   bool // persist probe
	kaDue      bool // keepalive probe
	forceSmall bool // the SWS override timer fired
	rtxOne     bool // fast retransmit: resend one segment at SND.UNA
	// A D-SACK block (RFC 2883) for the next ACK: data that arrived
	// again, [dsackStart, dsackEnd).
	dsackDue             bool
	dsackStart, dsackEnd Seq

	challengeWindow clock.Time // start of the current RFC 5961 §7 second
	challengeCount  int

	events Events

	// bufBusy says data entered a buffer since the buffer-idle timer was
	// armed; the timer then waits another period before releasing memory.
	bufBusy bool

	out Segment
}

// newTCB allocates a TCB. Its buffers, the out-of-order ranges and the
// SACK scoreboard are allocated when first needed.
func newTCB(cfg *Config, tsOffset uint32, now clock.Time) *TCB {
	if cfg == nil {
		c := DefaultConfig()
		cfg = &c
	} else if !cfg.defaulted {
		c := *cfg
		c.SetDefaults()
		cfg = &c
	}
	t := &TCB{
		cfg:      cfg,
		stats:    cfg.Stats,
		now:      now,
		tsOffset: tsOffset,
		tsEpoch:  cfg.TSEpoch,
		sndBuf:   newRing(cfg.SendBufSize),
		rcvBuf:   newRing(cfg.RecvBufSize),
		recovery: recovery{burst: -1},
	}
	if t.tsEpoch == 0 {
		t.tsEpoch = now
	}
	t.rtt.init(cfg)
	t.rcvMSS = min(536, uint32(cfg.MSS))
	return t
}

// NewSynReceived builds a TCB in SYN-RECEIVED from the peer's SYN with our
// ISS, negotiates the options (RFC 9293 §3.10.7.2) and queues the SYN-ACK;
// call Output to get it. tsOffset is the random per-connection offset of
// our timestamp clock (RFC 7323 §5.4). cfg is shared, not copied, once
// SetDefaults has been called on it.
func NewSynReceived(cfg *Config, syn *Segment, iss Seq, tsOffset uint32, now clock.Time) *TCB {
	t := newTCB(cfg, tsOffset, now)
	t.passive = true
	t.state = Listen
	t.irs, t.rcvNxt = syn.Seq, syn.Seq.Add(1)
	t.rcvAdv = t.rcvNxt
	t.iss, t.sndUna, t.sndNxt, t.sndMax = iss, iss, iss, iss
	t.recover = iss
	t.negotiate(&syn.Opts)
	t.sndWnd = uint32(syn.Wnd) // RFC 7323 §2.2: the SYN's window is never scaled
	t.maxSndWnd = t.sndWnd
	t.sndWl1, t.sndWl2 = syn.Seq, iss
	if t.tsOK {
		t.tsRecent, t.tsRecentAt, t.tsRecentSet = syn.Opts.TSVal, now, true
	}
	t.lastAckSent = t.rcvNxt
	t.synDue = true
	t.setState(SynReceived, "SYN received")
	return t
}

// NewSynSent builds a TCB for an active open and queues our SYN with every
// option cfg enables. The engine opens passively only; this serves the
// package's tests and benchmarks that need a peer TCB.
func NewSynSent(cfg *Config, iss Seq, tsOffset uint32, now clock.Time) *TCB {
	t := newTCB(cfg, tsOffset, now)
	t.iss, t.sndUna, t.sndNxt, t.sndMax = iss, iss, iss, iss
	t.recover = iss
	t.rcvShift = t.ourShift()
	t.synDue = true
	t.setState(SynSent, "active open")
	return t
}

// NewFromCookie builds an ESTABLISHED TCB from the ACK that completed a
// SYN-cookie handshake (RFC 4987 §3.6). irs is the ISN of the peer (ACK's
// sequence minus one), iss our cookie ISN, mss and wscale (-1 for none)
// and sackOK what the cookie encoded. Timestamps are on when the ACK
// carries them and cfg enables them; the engine must then have generated
// the cookie TSval with the same TSEpoch and tsOffset.
func NewFromCookie(cfg *Config, ack *Segment, iss, irs Seq, mss int, wscale int8, sackOK bool, tsOffset uint32, now clock.Time) *TCB {
	t := newTCB(cfg, tsOffset, now)
	t.passive = true
	t.irs, t.rcvNxt = irs, irs.Add(1)
	t.iss, t.sndUna, t.sndNxt, t.sndMax = iss, iss.Add(1), iss.Add(1), iss.Add(1)
	t.recover = iss
	t.sndMSS = uint32(min(max(mss, 64), t.cfg.MSS))
	if wscale >= 0 && t.cfg.WindowScale {
		t.wsOK, t.sndShift, t.rcvShift = true, uint8(min(wscale, packet.MaxWScale)), t.ourShift()
	}
	t.sackOK = sackOK && t.cfg.SACK
	t.tsOK = ack.Opts.HasTS && t.cfg.Timestamps
	if t.tsOK {
		t.tsRecent, t.tsRecentAt, t.tsRecentSet = ack.Opts.TSVal, now, true
	}
	// The cookie SYN-ACK advertised min(initial buffer, 64 KiB), unscaled.
	t.rcvAdv = t.rcvNxt.Add(uint32(min(t.rcvBuf.cap(), 0xffff)))
	t.lastAckSent = t.rcvNxt
	t.sndWl1, t.sndWl2 = irs, iss
	t.updateSendWindow(ack)
	t.initCC(now)
	t.setState(Established, "valid SYN cookie")
	return t
}

// negotiate applies the peer's SYN options (RFC 9293 §3.7.1, RFC 7323
// §1.3, RFC 2018 §2): each option is used only if both ends want it.
func (t *TCB) negotiate(o *packet.TCPOptions) {
	peerMSS := t.cfg.DefaultSendMSS
	if o.HasMSS {
		peerMSS = int(o.MSS)
	}
	// RFC 9293 §3.7.1: send no more than the peer's MSS; our own MSS caps
	// it too so that segments fit the TUN MTU. 64 guards against absurdly
	// small announced values.
	t.sndMSS = uint32(max(min(peerMSS, t.cfg.MSS), 64))
	if o.HasWScale && t.cfg.WindowScale {
		// RFC 7323 §2.3: a shift above 14 is used as 14.
		t.wsOK, t.sndShift, t.rcvShift = true, min(o.WScale, packet.MaxWScale), t.ourShift()
	}
	t.sackOK = o.SACKPermitted && t.cfg.SACK
	t.tsOK = o.HasTS && t.cfg.Timestamps
}

// ourShift is the window shift we announce: windowShift of our Config.
func (t *TCB) ourShift() uint8 { return windowShift(t.cfg) }

// windowShift is the smallest window shift that can express the largest
// receive buffer cfg allows, RecvBufMax (RFC 7323 §2.3), so that the
// buffer can auto-tune up to it after the handshake fixed the shift. It
// needs no TCB: a SYN-cookie SYN-ACK must announce the same shift the TCB
// later built from the cookie uses. Zero fields count as their defaults,
// so cfg need not have been through SetDefaults.
func windowShift(cfg *Config) uint8 {
	limit := cfg.RecvBufMax
	if limit == 0 {
		limit = defaultRecvBufMax
	}
	size := cfg.RecvBufSize
	if size == 0 {
		size = defaultRecvBufSize
	}
	limit = max(limit, size)
	var s uint8
	for s < packet.MaxWScale && limit>>s > maxWindowField {
		s++
	}
	return s
}

// State returns the connection state.
func (t *TCB) State() State { return t.state }

// Err returns why the connection ended (ErrConnReset, ErrTimeout, ...), or
// nil while it is alive or when it closed normally.
func (t *TCB) Err() error {
	if t.err == errNormalClose {
		return nil
	}
	return t.err
}

// Reason returns the reason of the last state transition, e.g. "reset in
// SYN-RECEIVED" or "SYN-ACK retransmissions exhausted"; the engine reads
// it once the TCB is Done.
func (t *TCB) Reason() string { return t.stateReason }

// Done reports whether the TCB is CLOSED with nothing left to send; the
// engine may then forget it.
func (t *TCB) Done() bool { return t.state == Closed && !t.rstDue }

// Events returns what changed since the last call and clears it.
func (t *TCB) Events() Events {
	e := t.events
	t.events = 0
	return e
}

// MSS returns the payload size we send in full segments, before options.
func (t *TCB) MSS() int { return int(t.sndMSS) }

// close enters CLOSED with err as the reason for the application.
func (t *TCB) close(err error, reason string) {
	if t.err == nil {
		t.err = err
	}
	if err != errNormalClose {
		t.events |= EventReset
	}
	t.setState(Closed, reason)
}
