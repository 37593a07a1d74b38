package gvisor

import (
	"errors"
	"fmt"
	"log/slog"

	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Limits and defaults of Options. They are constants, not variables, so
// that nothing in the package is mutable at package level.
const (
	// DefaultMTU matches the usual Ethernet-sized TUN MTU.
	DefaultMTU = 1500

	// MinMTU is the IPv6 minimum link MTU (RFC 8200 §5); the NIC carries
	// both families, so it cannot be smaller.
	MinMTU = 1280

	// MaxMTU is the largest IP packet a TUN carries without GSO.
	MaxMTU = 65535

	// DefaultReceiveBufferSize is 4 MiB: see Options.ReceiveBufferSize.
	DefaultReceiveBufferSize = 4 << 20

	// DefaultSendBufferSize is 4 MiB: see Options.SendBufferSize.
	DefaultSendBufferSize = 4 << 20

	// DefaultMaxInFlightSYN bounds handshakes the handler is deciding on.
	DefaultMaxInFlightSYN = 1024

	// DefaultCongestionControl is the algorithm Linux uses by default.
	DefaultCongestionControl = "cubic"

	// minBufferSize is the smallest TCP buffer gVisor accepts.
	minBufferSize = tcp.MinBufferSize

	// initialModeratedBuffer is where an auto-tuned receive buffer starts:
	// gVisor's own default, small enough for many idle flows.
	initialModeratedBuffer = tcp.DefaultReceiveBufferSize
)

// Options tunes the gVisor stack. Start from DefaultOptions: a zero numeric
// field or an empty string takes its default in New, but the booleans are
// taken as given.
type Options struct {
	// MTU is the TUN's MTU and the link MTU of the stack's NIC; every
	// packet the stack emits is at most this long (GSO is not used). TCP
	// derives its MSS from it. Default 1500; allowed 1280..65535.
	MTU int

	// SACK enables selective acknowledgements (RFC 2018). Default true:
	// the app side is a kernel TCP that offers SACK, and with it a burst
	// of losses (a TUN queue overflowing under load) is repaired in one
	// round trip instead of one retransmission per round trip. gVisor
	// leaves it off by default.
	SACK bool

	// ReceiveBufferSize is the largest TCP receive buffer of a flow, in
	// bytes, which bounds the window advertised to the app and so the
	// upload throughput of one flow. Default 4 MiB: the TUN round trip is
	// tiny but goroutine scheduling and a slow upstream stall the reader
	// for milliseconds, and at several Gbit/s a 4 MiB window keeps the app
	// sending through such stalls. Memory is only used while data waits
	// to be read. With ModerateReceiveBuffer the buffer starts at 1 MiB
	// (or this value, if smaller) and grows up to it; without, every flow
	// gets the full size from the start. Minimum 4096.
	ReceiveBufferSize int

	// SendBufferSize is the TCP send buffer of a flow, in bytes: how much
	// data written to a Conn may wait for the app's acknowledgement. It
	// bounds download throughput the same way ReceiveBufferSize bounds
	// uploads; default 4 MiB for the same reason. Minimum 4096.
	SendBufferSize int

	// ModerateReceiveBuffer enables receive buffer auto-tuning (like
	// Linux tcp_moderate_rcvbuf): each flow's buffer grows towards
	// ReceiveBufferSize only when the reader keeps up with a fast sender.
	// Default true, so that thousands of mostly idle flows stay small.
	ModerateReceiveBuffer bool

	// CongestionControl is "cubic" or "reno". Default "cubic", as in
	// Linux: it regains the window faster after a loss on a fast path.
	CongestionControl string

	// MaxInFlightSYN is how many TCP connection attempts may wait for the
	// handler's Accept or Reject at once. SYNs for new flows beyond it
	// are dropped (the app retransmits) and counted in
	// Stats.TCPSYNDropped. Default 1024: every pending attempt costs a
	// goroutine and usually an upstream dial, so a SYN flood must not
	// start an unbounded number of them.
	MaxInFlightSYN int

	// Logger receives the stack's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultOptions returns the documented defaults.
func DefaultOptions() Options {
	return Options{
		MTU:                   DefaultMTU,
		SACK:                  true,
		ReceiveBufferSize:     DefaultReceiveBufferSize,
		SendBufferSize:        DefaultSendBufferSize,
		ModerateReceiveBuffer: true,
		CongestionControl:     DefaultCongestionControl,
		MaxInFlightSYN:        DefaultMaxInFlightSYN,
	}
}

// withDefaults fills zero fields with their defaults.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.MTU == 0 {
		o.MTU = d.MTU
	}
	if o.ReceiveBufferSize == 0 {
		o.ReceiveBufferSize = d.ReceiveBufferSize
	}
	if o.SendBufferSize == 0 {
		o.SendBufferSize = d.SendBufferSize
	}
	if o.CongestionControl == "" {
		o.CongestionControl = d.CongestionControl
	}
	if o.MaxInFlightSYN == 0 {
		o.MaxInFlightSYN = d.MaxInFlightSYN
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate reports every invalid field.
func (o Options) validate() error {
	var errs []error
	if o.MTU < MinMTU || o.MTU > MaxMTU {
		errs = append(errs, fmt.Errorf("mtu %d outside %d..%d", o.MTU, MinMTU, MaxMTU))
	}
	if o.ReceiveBufferSize < minBufferSize {
		errs = append(errs, fmt.Errorf("receive buffer size %d below %d", o.ReceiveBufferSize, minBufferSize))
	}
	if o.SendBufferSize < minBufferSize {
		errs = append(errs, fmt.Errorf("send buffer size %d below %d", o.SendBufferSize, minBufferSize))
	}
	switch o.CongestionControl {
	case "cubic", "reno":
	default:
		errs = append(errs, fmt.Errorf("congestion control %q is neither cubic nor reno", o.CongestionControl))
	}
	if o.MaxInFlightSYN < 0 {
		errs = append(errs, fmt.Errorf("max in-flight SYN %d is negative", o.MaxInFlightSYN))
	}
	return errors.Join(errs...)
}

// receiveBufferRange is the gVisor receive buffer range for o.
func (o Options) receiveBufferRange() (initial, maximum int) {
	maximum = o.ReceiveBufferSize
	if !o.ModerateReceiveBuffer {
		return maximum, maximum
	}
	return min(initialModeratedBuffer, maximum), maximum
}
