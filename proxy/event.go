package proxy

import (
	"fmt"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/stack"
)

// Side names one end of a relayed flow.
type Side uint8

const (
	// SideApp is the connection to the app, terminated in the stack.
	SideApp Side = iota
	// SideUpstream is the connection the proxy dialed.
	SideUpstream
)

func (s Side) String() string {
	if s == SideApp {
		return "app"
	}
	return "upstream"
}

// other returns the opposite side.
func (s Side) other() Side { return 1 - s }

// EventKind says what happened to a flow.
type EventKind uint8

const (
	// EventDialStart: the upstream dial begins.
	EventDialStart EventKind = iota + 1
	// EventDialDone: the upstream dial ended; Err is nil on success.
	EventDialDone
	// EventAccept: the app's handshake was completed (Err nil) or failed.
	EventAccept
	// EventReject: the flow was refused with a RST to the app; Err says
	// why (policy, refusal, timeout, ...).
	EventReject
	// EventEOF: Side sent FIN; its Read returned io.EOF.
	EventEOF
	// EventReset: Side reset the connection (RST received).
	EventReset
	// EventCloseWrite: the proxy sent FIN to Side (half-close).
	EventCloseWrite
	// EventAbort: the proxy reset Side (RST sent, unsent data dropped).
	EventAbort
	// EventTimeout: the idle or half-close timeout expired; Err says which.
	EventTimeout
	// EventClose: the relay is over and both connections are closed. Up
	// and Down hold the bytes relayed.
	EventClose
	// EventRoute: the flow's outbound was chosen; Route says which and
	// by which rule.
	EventRoute
)

func (k EventKind) String() string {
	switch k {
	case EventDialStart:
		return "dial-start"
	case EventDialDone:
		return "dial-done"
	case EventAccept:
		return "accept"
	case EventReject:
		return "reject"
	case EventEOF:
		return "eof"
	case EventReset:
		return "reset"
	case EventCloseWrite:
		return "close-write"
	case EventAbort:
		return "abort"
	case EventTimeout:
		return "timeout"
	case EventClose:
		return "close"
	case EventRoute:
		return "route"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one step in the life of a TCP flow as the proxy sees it. A
// trace prints them next to the stack's own packet-level events.
type Event struct {
	Time clock.Time // from Options.Clock
	Flow stack.FlowID
	Kind EventKind
	// Side is the end the event concerns, for EventEOF, EventReset,
	// EventCloseWrite and EventAbort.
	Side Side
	Err  error
	// Up and Down count the bytes relayed app→upstream and
	// upstream→app, for EventClose.
	Up, Down uint64
	// Route is the flow's outbound, for EventRoute and EventDialDone.
	Route Route
	// Elapsed is how long the dial took, for EventDialDone.
	Elapsed time.Duration
	// Conn is the flow's ID in Proxy.Connections, for EventRoute and
	// EventClose.
	Conn uint64
}

// Observer receives the Events of every TCP flow. It is called
// synchronously from the flow's goroutines, concurrently for different
// flows and for the two directions of one flow, so it must be safe for
// concurrent use and quick.
type Observer func(Event)
