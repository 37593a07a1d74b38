package packet

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 header layout (RFC 8200 §3).
const (
	IPv6HeaderLen     = 40
	IPv6MaxPayloadLen = 65535
)

// IPv6 is a view of an IPv6 packet starting at its fixed header. Accessors
// read and setters write the bytes in place; they assume the view holds at
// least the 40-byte header and panic otherwise.
type IPv6 []byte

// Version returns the IP version field (6 for a valid packet).
func (h IPv6) Version() uint8 { return h[0] >> 4 }

// TrafficClass returns the traffic class (DSCP and ECN) byte.
func (h IPv6) TrafficClass() uint8 { return uint8(binary.BigEndian.Uint16(h[0:]) >> 4) }

// FlowLabel returns the 20-bit flow label.
func (h IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(h[0:]) & 0xfffff }

// PayloadLen returns the payload length field: everything after the fixed
// header, extension headers included.
func (h IPv6) PayloadLen() int { return int(binary.BigEndian.Uint16(h[4:])) }

// NextHeader returns the type of the header that follows the fixed header.
func (h IPv6) NextHeader() uint8 { return h[6] }

// HopLimit returns the hop limit field.
func (h IPv6) HopLimit() uint8 { return h[7] }

// Src returns the source address.
func (h IPv6) Src() netip.Addr { return netip.AddrFrom16([16]byte(h[8:24])) }

// Dst returns the destination address.
func (h IPv6) Dst() netip.Addr { return netip.AddrFrom16([16]byte(h[24:40])) }

// Payload returns the bytes after the fixed header up to the payload length.
func (h IPv6) Payload() []byte { return h[IPv6HeaderLen : IPv6HeaderLen+h.PayloadLen()] }

// SetVersionClassFlow sets version 6, the traffic class and the flow label.
func (h IPv6) SetVersionClassFlow(class uint8, flow uint32) {
	binary.BigEndian.PutUint32(h[0:], 6<<28|uint32(class)<<20|flow&0xfffff)
}

// SetPayloadLen sets the payload length field.
func (h IPv6) SetPayloadLen(n int) { binary.BigEndian.PutUint16(h[4:], uint16(n)) }

// SetNextHeader sets the next header field.
func (h IPv6) SetNextHeader(v uint8) { h[6] = v }

// SetHopLimit sets the hop limit field.
func (h IPv6) SetHopLimit(v uint8) { h[7] = v }

// SetSrc sets the source address; an IPv4 address is written in its
// IPv4-mapped form.
func (h IPv6) SetSrc(a netip.Addr) { a16 := a.As16(); copy(h[8:24], a16[:]) }

// SetDst sets the destination address; an IPv4 address is written in its
// IPv4-mapped form.
func (h IPv6) SetDst(a netip.Addr) { a16 := a.As16(); copy(h[24:40], a16[:]) }
