package packet

import (
	"encoding/binary"
	"net/netip"
)

// IPv4 header layout (RFC 791 §3.1).
const (
	IPv4MinHeaderLen = 20
	IPv4MaxHeaderLen = 60
	IPv4MaxTotalLen  = 65535

	// DefaultTTL is the TTL and hop limit the builders use when none is given.
	DefaultTTL = 64
)

// IPv4 fragmentation flags as they appear in the flags/fragment-offset word.
const (
	IPv4FlagDontFragment  = 0x4000
	IPv4FlagMoreFragments = 0x2000
	ipv4FragOffsetMask    = 0x1fff
)

// IP protocol numbers (also IPv6 next header values) the package knows.
const (
	ProtoHopByHop = 0
	ProtoICMPv4   = 1
	ProtoTCP      = 6
	ProtoUDP      = 17
	ProtoRouting  = 43
	ProtoFragment = 44
	ProtoESP      = 50
	ProtoAH       = 51
	ProtoICMPv6   = 58
	ProtoNoNext   = 59
	ProtoDestOpts = 60
)

// IPv4 is a view of an IPv4 packet starting at its header. Accessors read
// and setters write the bytes in place; they assume the view holds at least
// a full header (as after ParseIP, or a builder) and panic otherwise.
type IPv4 []byte

// Version returns the IP version field (4 for a valid packet).
func (h IPv4) Version() uint8 { return h[0] >> 4 }

// HeaderLen returns the header length in bytes, options included.
func (h IPv4) HeaderLen() int { return int(h[0]&0x0f) * 4 }

// TOS returns the type-of-service (DSCP and ECN) byte.
func (h IPv4) TOS() uint8 { return h[1] }

// TotalLen returns the total length field: header plus payload.
func (h IPv4) TotalLen() int { return int(binary.BigEndian.Uint16(h[2:])) }

// ID returns the identification field.
func (h IPv4) ID() uint16 { return binary.BigEndian.Uint16(h[4:]) }

// FlagsFragment returns the raw flags and fragment offset word.
func (h IPv4) FlagsFragment() uint16 { return binary.BigEndian.Uint16(h[6:]) }

// DontFragment reports whether DF is set.
func (h IPv4) DontFragment() bool { return h.FlagsFragment()&IPv4FlagDontFragment != 0 }

// MoreFragments reports whether MF is set.
func (h IPv4) MoreFragments() bool { return h.FlagsFragment()&IPv4FlagMoreFragments != 0 }

// FragmentOffset returns the fragment offset in bytes.
func (h IPv4) FragmentOffset() int { return int(h.FlagsFragment()&ipv4FragOffsetMask) * 8 }

// TTL returns the time-to-live field.
func (h IPv4) TTL() uint8 { return h[8] }

// Protocol returns the transport protocol number.
func (h IPv4) Protocol() uint8 { return h[9] }

// Checksum returns the header checksum field.
func (h IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(h[10:]) }

// Src returns the source address.
func (h IPv4) Src() netip.Addr { return netip.AddrFrom4([4]byte(h[12:16])) }

// Dst returns the destination address.
func (h IPv4) Dst() netip.Addr { return netip.AddrFrom4([4]byte(h[16:20])) }

// Options returns the header options, empty when the header is 20 bytes.
func (h IPv4) Options() []byte { return h[IPv4MinHeaderLen:h.HeaderLen()] }

// Payload returns the bytes after the header up to the total length.
func (h IPv4) Payload() []byte { return h[h.HeaderLen():h.TotalLen()] }

// ComputeChecksum returns the header checksum the packet should carry,
// computed as if the checksum field were zero.
func (h IPv4) ComputeChecksum() uint16 {
	hl := h.HeaderLen()
	s := ChecksumCombine(Checksum(h[:10], 0), Checksum(h[12:hl], 0))
	return ^s
}

// ChecksumValid reports whether the header checksum is correct.
func (h IPv4) ChecksumValid() bool { return Checksum(h[:h.HeaderLen()], 0) == 0xffff }

// SetVersionHeaderLen sets version 4 and the header length in bytes, which
// must be a multiple of 4 between 20 and 60.
func (h IPv4) SetVersionHeaderLen(n int) { h[0] = 4<<4 | uint8(n/4) }

// SetTOS sets the type-of-service byte.
func (h IPv4) SetTOS(v uint8) { h[1] = v }

// SetTotalLen sets the total length field.
func (h IPv4) SetTotalLen(n int) { binary.BigEndian.PutUint16(h[2:], uint16(n)) }

// SetID sets the identification field.
func (h IPv4) SetID(v uint16) { binary.BigEndian.PutUint16(h[4:], v) }

// SetFlagsFragment sets the raw flags and fragment offset word.
func (h IPv4) SetFlagsFragment(v uint16) { binary.BigEndian.PutUint16(h[6:], v) }

// SetTTL sets the time-to-live field.
func (h IPv4) SetTTL(v uint8) { h[8] = v }

// SetProtocol sets the transport protocol number.
func (h IPv4) SetProtocol(v uint8) { h[9] = v }

// SetChecksum sets the header checksum field.
func (h IPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(h[10:], v) }

// SetSrc sets the source address; a must be an IPv4 address.
func (h IPv4) SetSrc(a netip.Addr) { a4 := a.As4(); copy(h[12:16], a4[:]) }

// SetDst sets the destination address; a must be an IPv4 address.
func (h IPv4) SetDst(a netip.Addr) { a4 := a.As4(); copy(h[16:20], a4[:]) }
