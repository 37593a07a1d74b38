package tcp

import (
	"sync"
	"sync/atomic"
)

// State is a connection state (RFC 9293 §3.3.2). The zero value is Closed.
type State uint8

// Connection states. SynSent exists for active opens, which only this
// package's tests make (a TCB as the peer of a passive one, in unit tests
// and benchmarks); the engine itself only opens passively.
const (
	Closed State = iota
	Listen
	SynSent
	SynReceived
	Established
	FinWait1
	FinWait2
	CloseWait
	Closing
	LastAck
	TimeWait
)

var stateNames = [...]string{
	Closed:      "CLOSED",
	Listen:      "LISTEN",
	SynSent:     "SYN-SENT",
	SynReceived: "SYN-RECEIVED",
	Established: "ESTABLISHED",
	FinWait1:    "FIN-WAIT-1",
	FinWait2:    "FIN-WAIT-2",
	CloseWait:   "CLOSE-WAIT",
	Closing:     "CLOSING",
	LastAck:     "LAST-ACK",
	TimeWait:    "TIME-WAIT",
}

// String returns the RFC 9293 name of the state, e.g. "FIN-WAIT-2".
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "STATE(?)"
}

// synchronized reports whether s is one of the synchronized states of RFC
// 9293 §3.5 (ESTABLISHED and every state after it), where RFC 5961 rules
// apply to RST and SYN.
func (s State) synchronized() bool { return s >= Established }

// TraceKind says what a TraceEvent reports.
type TraceKind uint8

// Trace event kinds.
const (
	TraceSegIn  TraceKind = iota + 1 // a segment handed to Input
	TraceSegOut                      // a segment handed to the emit callback
	TraceState                       // a state transition
	TraceDrop                        // an inbound segment dropped, with the reason
)

func (k TraceKind) String() string {
	switch k {
	case TraceSegIn:
		return "in"
	case TraceSegOut:
		return "out"
	case TraceState:
		return "state"
	case TraceDrop:
		return "drop"
	}
	return "?"
}

// TraceEvent is one observation of the control block. Seg is borrowed for
// the duration of the callback. Reason is a constant string: for TraceDrop
// the one specific reason the segment was dropped, for TraceState why the
// transition happened.
type TraceEvent struct {
	Kind     TraceKind
	Seg      *Segment
	From, To State
	Reason   string
}

// SetTrace installs fn to observe segments in and out, transitions and
// drops; nil removes it. fn runs synchronously inside the TCB call and
// must not call back into the TCB.
func (t *TCB) SetTrace(fn func(TraceEvent)) { t.traceFn = fn }

func (t *TCB) trace(kind TraceKind, seg *Segment, reason string) {
	if t.traceFn != nil {
		t.traceFn(TraceEvent{Kind: kind, Seg: seg, From: t.state, To: t.state, Reason: reason})
	}
}

// drop records that seg is discarded for reason. Every discarded inbound
// segment goes through here exactly once.
func (t *TCB) drop(seg *Segment, reason string) {
	t.count(func(c *Counters) *atomic.Uint64 { return &c.DroppedSegments })
	t.trace(TraceDrop, seg, reason)
}

// transitions are the legal edges of the state machine (RFC 9293 §3.3.2,
// Figure 5), each with the event that takes it. Read top to bottom they
// are the handshake, the four-way close with its variants, and the ways
// out. setState changes state only along them; the package's tests check
// every transition against the table and that each edge is taken.
var transitions = map[[2]State]string{
	// Opening.
	{Listen, SynReceived}:      "SYN received",
	{Closed, Established}:      "ACK carrying a valid SYN cookie",
	{Closed, SynSent}:          "active open (tests only)",
	{SynSent, SynReceived}:     "SYN received in SYN-SENT (simultaneous open)",
	{SynSent, Established}:     "SYN-ACK received",
	{SynReceived, Established}: "ACK of our SYN-ACK",
	// We close first.
	{Established, FinWait1}: "the application closed its direction (or did during the handshake)",
	{FinWait1, FinWait2}:    "our FIN acknowledged",
	{FinWait1, Closing}:     "FIN received before our FIN was acknowledged",
	{FinWait2, TimeWait}:    "FIN received (also in the segment that acknowledged our FIN)",
	{Closing, TimeWait}:     "our FIN acknowledged",
	// The peer closes first.
	{Established, CloseWait}: "FIN received",
	{CloseWait, LastAck}:     "the application closed its direction",
	// The ways out: the last ACK, 2·MSL, RST, abort, timeouts.
	{SynSent, Closed}:     "RST, timeout or abort",
	{SynReceived, Closed}: "RST, timeout or abort",
	{Established, Closed}: "RST, timeout or abort",
	{FinWait1, Closed}:    "RST, timeout or abort",
	{FinWait2, Closed}:    "RST, FIN-WAIT-2 timeout or abort",
	{CloseWait, Closed}:   "RST, timeout or abort",
	{Closing, Closed}:     "RST or timeout",
	{LastAck, Closed}:     "our FIN acknowledged, RST or timeout",
	{TimeWait, Closed}:    "2·MSL passed, reused by a new SYN, or the TIME-WAIT table was full",
}

// checkTransitions, set by the package's tests, makes setState panic on
// an edge missing from transitions and record the edges taken.
var (
	checkTransitions bool
	takenMu          sync.Mutex // guards taken
	taken            = map[[2]State]bool{}
)

// setState is the only place the connection state changes. It runs the
// entry actions that belong to the new state (timers, events) so that
// every path into a state behaves the same.
func (t *TCB) setState(to State, reason string) {
	from := t.state
	if from == to {
		return
	}
	if checkTransitions {
		edge := [2]State{from, to}
		if _, ok := transitions[edge]; !ok {
			panic("tcp: illegal transition " + from.String() + " → " + to.String() + " (" + reason + ")")
		}
		takenMu.Lock()
		taken[edge] = true
		takenMu.Unlock()
	}
	t.state = to
	if t.traceFn != nil {
		t.traceFn(TraceEvent{Kind: TraceState, From: from, To: to, Reason: reason})
	}
	t.stateReason = reason
	switch to {
	case Established:
		t.events |= EventEstablished | EventWritable
	case FinWait2:
		t.armFinWait2()
	case TimeWait:
		// RFC 9293 §3.10.7.4 eighth step: start the time-wait timer,
		// turn off the other timers.
		t.stopAllTimers()
		t.resetTLP()
		t.timeWaitAt = t.now.Add(t.cfg.MSL2)
		t.releaseOnEnd()
	case Closed:
		t.stopAllTimers()
		t.events |= EventClosed | EventReadable | EventWritable
		t.releaseOnEnd()
	}
}
