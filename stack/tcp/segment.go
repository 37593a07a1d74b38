package tcp

import (
	"fmt"

	"github.com/tungate/tungate/internal/packet"
)

// Segment is the control block's view of one TCP segment, inbound or
// outbound. It carries no addresses: the engine owns the flow.
type Segment struct {
	Seq, Ack Seq
	Flags    packet.TCPFlags
	// Wnd is the window field as it is on the wire, before scaling.
	Wnd  uint16
	Opts packet.TCPOptions
	// Payload is borrowed: inbound, for the duration of the call that got
	// it; outbound, until the next call into the control block.
	Payload []byte
}

// Len is SEG.LEN (RFC 9293 §3.4): the payload plus one for SYN and one for
// FIN, each of which occupies a sequence number.
func (s *Segment) Len() uint32 {
	n := uint32(len(s.Payload))
	if s.Flags&packet.SYN != 0 {
		n++
	}
	if s.Flags&packet.FIN != 0 {
		n++
	}
	return n
}

// Has reports whether every flag in f is set.
func (s *Segment) Has(f packet.TCPFlags) bool { return s.Flags&f == f }

// String formats the segment like a trace line: flags, seq, ack, window
// and payload length. It allocates; use it for logs and tests.
func (s *Segment) String() string {
	return fmt.Sprintf("%s seq=%d ack=%d win=%d len=%d", s.Flags, uint32(s.Seq), uint32(s.Ack), s.Wnd, len(s.Payload))
}
