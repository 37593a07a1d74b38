package packet

import (
	"encoding/binary"
	"slices"
)

// TCP option kinds (RFC 9293 §3.2, RFC 7323 §2-3, RFC 2018 §2-3).
const (
	TCPOptEOL           = 0
	TCPOptNOP           = 1
	TCPOptMSS           = 2
	TCPOptWScale        = 3
	TCPOptSACKPermitted = 4
	TCPOptSACK          = 5
	TCPOptTimestamp     = 8
)

// Option limits.
const (
	// MaxWScale is the largest usable window shift; RFC 7323 §2.3 says a
	// larger received value MUST be treated as 14. ParseTCPOptions reports
	// the value as received so that the caller can log it.
	MaxWScale = 14

	// MaxSACKBlocks is the most SACK blocks 40 option bytes can carry.
	MaxSACKBlocks = 4
)

// SACKBlock is one block of a SACK option (RFC 2018 §3): the receiver holds
// the sequence space [Start, End).
type SACKBlock struct {
	Start, End uint32
}

// TCPOptions is the decoded form of the options this package knows. The
// Has* fields say whether an option was present; the zero value means no
// options.
type TCPOptions struct {
	MSS    uint16
	HasMSS bool

	WScale    uint8
	HasWScale bool

	SACKPermitted bool

	TSVal, TSEcr uint32
	HasTS        bool

	SACKBlocks [MaxSACKBlocks]SACKBlock
	NumSACK    int
}

// Errors of ParseTCPOptions; each matches ErrBadOptions.
var (
	errOptNoLength = newError("packet: TCP option has no length byte", ErrBadOptions)
	errOptShortLen = newError("packet: TCP option length below 2", ErrBadOptions)
	errOptOverrun  = newError("packet: TCP option runs past the header", ErrBadOptions)
)

// ParseTCPOptions decodes the options area of a TCP header (TCP.Options).
// It follows RFC 9293 §3.1 and §3.2: options of unknown kind are skipped by
// their length, and so are known kinds whose length is wrong for the kind
// (as Linux does). A length that is below 2 or runs past b stops parsing:
// it returns what was decoded before that option and an error matching
// ErrBadOptions. A repeated option overwrites the earlier one. A SACK
// option with more than MaxSACKBlocks blocks keeps the first ones.
// It does not allocate.
func ParseTCPOptions(b []byte) (TCPOptions, error) {
	var o TCPOptions
	for i := 0; i < len(b); {
		switch b[i] {
		case TCPOptEOL:
			return o, nil
		case TCPOptNOP:
			i++
			continue
		}
		if i+1 >= len(b) {
			return o, errOptNoLength
		}
		n := int(b[i+1])
		if n < 2 {
			return o, errOptShortLen
		}
		if i+n > len(b) {
			return o, errOptOverrun
		}
		o.decode(b[i], b[i+2:i+n])
		i += n
	}
	return o, nil
}

// decode stores one option of the given kind with value v (the bytes after
// kind and length), ignoring it when the length does not fit the kind.
func (o *TCPOptions) decode(kind byte, v []byte) {
	switch kind {
	case TCPOptMSS:
		if len(v) == 2 {
			o.MSS, o.HasMSS = binary.BigEndian.Uint16(v), true
		}
	case TCPOptWScale:
		if len(v) == 1 {
			o.WScale, o.HasWScale = v[0], true
		}
	case TCPOptSACKPermitted:
		if len(v) == 0 {
			o.SACKPermitted = true
		}
	case TCPOptTimestamp:
		if len(v) == 8 {
			o.TSVal = binary.BigEndian.Uint32(v)
			o.TSEcr = binary.BigEndian.Uint32(v[4:])
			o.HasTS = true
		}
	case TCPOptSACK:
		if len(v) == 0 || len(v)%8 != 0 {
			return
		}
		o.NumSACK = min(len(v)/8, MaxSACKBlocks)
		for k := range o.NumSACK {
			o.SACKBlocks[k] = SACKBlock{
				Start: binary.BigEndian.Uint32(v[8*k:]),
				End:   binary.BigEndian.Uint32(v[8*k+4:]),
			}
		}
	}
}

// Sizes of the aligned option groups PutTCPOptions writes.
const (
	optLenMSS     = 4  // MSS
	optLenTS      = 12 // NOP NOP TS, or SACK-permitted TS
	optLenSACKOK  = 4  // NOP NOP SACK-permitted
	optLenWScale  = 4  // NOP WScale
	optLenSACKHdr = 4  // NOP NOP kind len
	optLenBlock   = 8  // one SACK block
)

// layout returns the length of everything but SACK blocks and how many
// SACK blocks fit after it within TCPMaxOptionsLen.
func (o *TCPOptions) layout() (fixed, nsack int) {
	if o.HasMSS {
		fixed += optLenMSS
	}
	if o.HasTS {
		fixed += optLenTS
	} else if o.SACKPermitted {
		fixed += optLenSACKOK
	}
	if o.HasWScale {
		fixed += optLenWScale
	}
	nsack = min(max(o.NumSACK, 0), MaxSACKBlocks)
	if nsack > 0 {
		room := (TCPMaxOptionsLen - fixed - optLenSACKHdr) / optLenBlock
		nsack = min(nsack, max(room, 0))
	}
	return fixed, nsack
}

// TCPOptionsLen returns how many bytes PutTCPOptions writes for o: a
// multiple of 4, at most TCPMaxOptionsLen.
func TCPOptionsLen(o *TCPOptions) int {
	fixed, nsack := o.layout()
	if nsack == 0 {
		return fixed
	}
	return fixed + optLenSACKHdr + nsack*optLenBlock
}

// PutTCPOptions writes o into b in the order and alignment Linux uses
// (tcp_options_write): MSS; timestamps behind two NOPs, or behind
// SACK-permitted when both are present; otherwise SACK-permitted behind
// two NOPs; NOP and window scale; SACK blocks behind two NOPs. SACK blocks
// that do not fit in TCPMaxOptionsLen are left out, the first ones kept.
// It returns the number of bytes written, TCPOptionsLen(o), and panics if
// b is shorter than that.
func PutTCPOptions(b []byte, o *TCPOptions) int {
	_, nsack := o.layout()
	n := 0
	if o.HasMSS {
		b[n], b[n+1] = TCPOptMSS, 4
		binary.BigEndian.PutUint16(b[n+2:], o.MSS)
		n += optLenMSS
	}
	switch {
	case o.HasTS:
		if o.SACKPermitted {
			b[n], b[n+1] = TCPOptSACKPermitted, 2
		} else {
			b[n], b[n+1] = TCPOptNOP, TCPOptNOP
		}
		b[n+2], b[n+3] = TCPOptTimestamp, 10
		binary.BigEndian.PutUint32(b[n+4:], o.TSVal)
		binary.BigEndian.PutUint32(b[n+8:], o.TSEcr)
		n += optLenTS
	case o.SACKPermitted:
		b[n], b[n+1], b[n+2], b[n+3] = TCPOptNOP, TCPOptNOP, TCPOptSACKPermitted, 2
		n += optLenSACKOK
	}
	if o.HasWScale {
		b[n], b[n+1], b[n+2], b[n+3] = TCPOptNOP, TCPOptWScale, 3, o.WScale
		n += optLenWScale
	}
	if nsack > 0 {
		b[n], b[n+1], b[n+2], b[n+3] = TCPOptNOP, TCPOptNOP, TCPOptSACK, uint8(2+nsack*optLenBlock)
		n += optLenSACKHdr
		for _, blk := range o.SACKBlocks[:nsack] {
			binary.BigEndian.PutUint32(b[n:], blk.Start)
			binary.BigEndian.PutUint32(b[n+4:], blk.End)
			n += optLenBlock
		}
	}
	return n
}

// AppendTCPOptions appends the encoding PutTCPOptions writes to dst.
func AppendTCPOptions(dst []byte, o *TCPOptions) []byte {
	n := TCPOptionsLen(o)
	dst = slices.Grow(dst, n)
	PutTCPOptions(dst[len(dst):len(dst)+n], o)
	return dst[:len(dst)+n]
}
