package packet

import (
	"encoding/binary"
	"net/netip"
)

// UDPHeaderLen is the size of the UDP header (RFC 768).
const UDPHeaderLen = 8

// UDP is a view of a UDP datagram: header and payload. Accessors read and
// setters write the bytes in place; they assume the view holds at least
// the 8-byte header and panic otherwise.
type UDP []byte

// SrcPort returns the source port.
func (u UDP) SrcPort() uint16 { return binary.BigEndian.Uint16(u[0:]) }

// DstPort returns the destination port.
func (u UDP) DstPort() uint16 { return binary.BigEndian.Uint16(u[2:]) }

// Length returns the length field: header plus payload.
func (u UDP) Length() int { return int(binary.BigEndian.Uint16(u[4:])) }

// Checksum returns the checksum field; 0 over IPv4 means none was sent.
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:]) }

// Payload returns the data after the header up to the length field.
func (u UDP) Payload() []byte { return u[UDPHeaderLen:u.Length()] }

// ComputeChecksum returns the checksum the datagram should carry between
// src and dst, computed over the whole view as if the checksum field were
// zero. A computed 0 is returned as 0xffff (RFC 768), since 0 means "no
// checksum".
func (u UDP) ComputeChecksum(src, dst netip.Addr) uint16 {
	c := transportChecksum(u, 6, ProtoUDP, src, dst)
	if c == 0 {
		return 0xffff
	}
	return c
}

// SetSrcPort sets the source port.
func (u UDP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(u[0:], v) }

// SetDstPort sets the destination port.
func (u UDP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(u[2:], v) }

// SetLength sets the length field.
func (u UDP) SetLength(n int) { binary.BigEndian.PutUint16(u[4:], uint16(n)) }

// SetChecksum sets the checksum field.
func (u UDP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(u[6:], v) }
