package packet

import "errors"

// Error categories. Every error ParseIP and ParseTCPOptions return matches
// exactly one or two of them under errors.Is and carries a message naming
// the specific defect, so a caller can count by category and log the
// detail. The errors are preallocated: returning them does not allocate.
var (
	// ErrTruncated: fewer bytes than a minimum header size or a length
	// field demands.
	ErrTruncated = errors.New("packet: truncated")

	// ErrBadHeader: a header field is impossible in itself (unknown
	// version, a length below the header's minimum, a misplaced IPv6
	// extension header).
	ErrBadHeader = errors.New("packet: malformed header")

	// ErrBadChecksum: the IPv4 header or the transport checksum is wrong.
	ErrBadChecksum = errors.New("packet: bad checksum")

	// ErrFragment: the packet is an IP fragment; reassembly is not done.
	ErrFragment = errors.New("packet: fragment")

	// ErrUnsupported: a well-formed packet this package does not handle,
	// such as another transport protocol or an IPsec header.
	ErrUnsupported = errors.New("packet: unsupported")

	// ErrBadOptions: a TCP option has an impossible length.
	ErrBadOptions = errors.New("packet: malformed TCP options")
)

// Errors of the builders.
var (
	// ErrShortBuffer: the destination buffer cannot hold the packet.
	ErrShortBuffer = errors.New("packet: buffer too small")

	// ErrTooLarge: the packet would exceed the IP length limit.
	ErrTooLarge = errors.New("packet: packet too large")

	// ErrAddress: addresses are invalid or of different families.
	ErrAddress = errors.New("packet: invalid or mixed address families")
)

// parseError is a specific defect that belongs to one or more categories.
type parseError struct {
	msg   string
	kinds []error
}

func newError(msg string, kinds ...error) error { return &parseError{msg: msg, kinds: kinds} }

func (e *parseError) Error() string   { return e.msg }
func (e *parseError) Unwrap() []error { return e.kinds }
