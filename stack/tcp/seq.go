// Package tcp is tungate's own stack (stack.kind custom), named for its
// heart, the TCP engine: a sans-I/O control block per connection (TCB) and
// the Engine around it that owns the flow table, timers and buffers and
// implements the stack contract. The Engine is the whole stack, not only
// TCP: it hands UDP flows to stack/udp and answers ICMP and ICMPv6 echo
// requests itself (DeliverInbound).
//
// Where to read: state.go has every state and the table of legal
// transitions; input.go validates a segment and dispatches it per state;
// ack.go, recv.go and output.go are the send and receive paths; timer.go
// and tlp.go the timers; listen.go the LISTEN state, SYN cookies and the
// handshake held while the handler decides; timewait.go the compact
// TIME-WAIT record.
//
// Time is an internal/clock reading (clock.Time, nanoseconds of one
// monotonic clock, 0 meaning "not set") everywhere inside: the TCB is
// handed it, the Engine reads Options.Clock and runs the TCBs' timers and
// the Conns' deadlines on that clock's timers. Only the net.Conn deadline
// setters take a wall-clock time.Time, converted on the way in. With a
// clock.Manual, tests and the script runner move the whole engine
// through virtual time by advancing the clock.
package tcp

// Seq is a TCP sequence number. Sequence space is circular (RFC 9293
// §3.4): every comparison goes through these methods, which are correct
// across the 2^32 wrap as long as the two numbers are less than 2^31 apart.
// Comparing two Seq values with < or > directly is a bug.
type Seq uint32

// Add returns s advanced by n bytes of sequence space.
func (s Seq) Add(n uint32) Seq { return s + Seq(n) }

// Sub returns the signed distance s - o.
func (s Seq) Sub(o Seq) int32 { return int32(s - o) }

// LessThan reports s < o in sequence space.
func (s Seq) LessThan(o Seq) bool { return int32(s-o) < 0 }

// LessEq reports s <= o in sequence space.
func (s Seq) LessEq(o Seq) bool { return int32(s-o) <= 0 }

// GreaterThan reports s > o in sequence space.
func (s Seq) GreaterThan(o Seq) bool { return int32(s-o) > 0 }

// GreaterEq reports s >= o in sequence space.
func (s Seq) GreaterEq(o Seq) bool { return int32(s-o) >= 0 }

// InWindow reports start <= s < start+size. A zero size window holds
// nothing.
func (s Seq) InWindow(start Seq, size uint32) bool {
	return uint32(s-start) < size
}

// InRange reports a <= s < b.
func (s Seq) InRange(a, b Seq) bool { return s.InWindow(a, uint32(b-a)) }

// Max returns the later of s and o.
func (s Seq) Max(o Seq) Seq {
	if s.LessThan(o) {
		return o
	}
	return s
}

// Min returns the earlier of s and o.
func (s Seq) Min(o Seq) Seq {
	if s.LessThan(o) {
		return s
	}
	return o
}
