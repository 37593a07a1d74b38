package packet

import (
	"encoding/binary"
	"net/netip"
)

// ICMPHeaderLen is the size of the ICMP header this package handles: type,
// code, checksum and the 4-byte rest-of-header (identifier and sequence
// number for echo messages). RFC 792 and RFC 4443 messages all have it.
const ICMPHeaderLen = 8

// ICMPv4 message types (RFC 792).
const (
	ICMPv4EchoReply    = 0
	ICMPv4DestUnreach  = 3
	ICMPv4EchoRequest  = 8
	ICMPv4TimeExceeded = 11
	ICMPv4ParamProblem = 12
)

// ICMPv6 message types (RFC 4443).
const (
	ICMPv6DestUnreach  = 1
	ICMPv6PacketTooBig = 2
	ICMPv6TimeExceeded = 3
	ICMPv6ParamProblem = 4
	ICMPv6EchoRequest  = 128
	ICMPv6EchoReply    = 129
)

// ICMPv4 is a view of an ICMP message carried in IPv4. Accessors read and
// setters write the bytes in place; they assume the view holds at least
// ICMPHeaderLen bytes and panic otherwise.
type ICMPv4 []byte

// Type returns the message type.
func (m ICMPv4) Type() uint8 { return m[0] }

// Code returns the message code.
func (m ICMPv4) Code() uint8 { return m[1] }

// Checksum returns the checksum field.
func (m ICMPv4) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:]) }

// ID returns the echo identifier.
func (m ICMPv4) ID() uint16 { return binary.BigEndian.Uint16(m[4:]) }

// Seq returns the echo sequence number.
func (m ICMPv4) Seq() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// Payload returns the data after the 8-byte header.
func (m ICMPv4) Payload() []byte { return m[ICMPHeaderLen:] }

// ComputeChecksum returns the checksum the message should carry, computed
// over the whole view as if the checksum field were zero. ICMPv4 has no
// pseudo-header.
func (m ICMPv4) ComputeChecksum() uint16 {
	return ^Checksum(m[4:], Checksum(m[:2], 0))
}

// SetType sets the message type.
func (m ICMPv4) SetType(v uint8) { m[0] = v }

// SetCode sets the message code.
func (m ICMPv4) SetCode(v uint8) { m[1] = v }

// SetChecksum sets the checksum field.
func (m ICMPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(m[2:], v) }

// SetID sets the echo identifier.
func (m ICMPv4) SetID(v uint16) { binary.BigEndian.PutUint16(m[4:], v) }

// SetSeq sets the echo sequence number.
func (m ICMPv4) SetSeq(v uint16) { binary.BigEndian.PutUint16(m[6:], v) }

// ICMPv6 is a view of an ICMPv6 message. Accessors read and setters write
// the bytes in place; they assume the view holds at least ICMPHeaderLen
// bytes and panic otherwise.
type ICMPv6 []byte

// Type returns the message type.
func (m ICMPv6) Type() uint8 { return m[0] }

// Code returns the message code.
func (m ICMPv6) Code() uint8 { return m[1] }

// Checksum returns the checksum field.
func (m ICMPv6) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:]) }

// ID returns the echo identifier.
func (m ICMPv6) ID() uint16 { return binary.BigEndian.Uint16(m[4:]) }

// Seq returns the echo sequence number.
func (m ICMPv6) Seq() uint16 { return binary.BigEndian.Uint16(m[6:]) }

// Payload returns the data after the 8-byte header.
func (m ICMPv6) Payload() []byte { return m[ICMPHeaderLen:] }

// ComputeChecksum returns the checksum the message should carry between
// src and dst (RFC 4443 §2.3: IPv6 pseudo-header with next header 58),
// computed over the whole view as if the checksum field were zero.
func (m ICMPv6) ComputeChecksum(src, dst netip.Addr) uint16 {
	return transportChecksum(m, 2, ProtoICMPv6, src, dst)
}

// SetType sets the message type.
func (m ICMPv6) SetType(v uint8) { m[0] = v }

// SetCode sets the message code.
func (m ICMPv6) SetCode(v uint8) { m[1] = v }

// SetChecksum sets the checksum field.
func (m ICMPv6) SetChecksum(v uint16) { binary.BigEndian.PutUint16(m[2:], v) }

// SetID sets the echo identifier.
func (m ICMPv6) SetID(v uint16) { binary.BigEndian.PutUint16(m[4:], v) }

// SetSeq sets the echo sequence number.
func (m ICMPv6) SetSeq(v uint16) { binary.BigEndian.PutUint16(m[6:], v) }
