package packet

import (
	"encoding/binary"
	"net/netip"
)

// TCP header layout (RFC 9293 §3.1).
const (
	TCPMinHeaderLen  = 20
	TCPMaxHeaderLen  = 60
	TCPMaxOptionsLen = TCPMaxHeaderLen - TCPMinHeaderLen
)

// TCPFlags is the control-bits byte of a TCP header.
type TCPFlags uint8

// TCP control bits (RFC 9293 §3.1; ECE and CWR from RFC 3168).
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
)

// flagLetters holds one letter per control bit, lowest bit first. That is
// also the order tcpdump and packetdrill print them in, which puts "."
// (ACK) after P and before U, E and W.
const flagLetters = "FSRP.UEW"

// String formats the flags the way tcpdump and packetdrill scripts do:
// "S", "S.", "P.", "F.", "R", "." for a bare ACK, "SEW" for an ECN SYN, and
// "none" when no bit is set.
func (f TCPFlags) String() string {
	if f == 0 {
		return "none"
	}
	var buf [len(flagLetters)]byte
	n := 0
	for i := range len(flagLetters) {
		if f&(1<<i) != 0 {
			buf[n] = flagLetters[i]
			n++
		}
	}
	return string(buf[:n])
}

// FlagString is TCPFlags.String for a raw flags byte.
func FlagString(flags uint8) string { return TCPFlags(flags).String() }

// Has reports whether every bit in want is set.
func (f TCPFlags) Has(want TCPFlags) bool { return f&want == want }

// TCP is a view of a TCP segment: header, options and payload. Accessors
// read and setters write the bytes in place; they assume the view holds at
// least a 20-byte header whose data offset fits the view (as after ParseIP,
// or a builder) and panic otherwise.
type TCP []byte

// SrcPort returns the source port.
func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[0:]) }

// DstPort returns the destination port.
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[2:]) }

// Seq returns the sequence number.
func (t TCP) Seq() uint32 { return binary.BigEndian.Uint32(t[4:]) }

// Ack returns the acknowledgment number, meaningful when ACK is set.
func (t TCP) Ack() uint32 { return binary.BigEndian.Uint32(t[8:]) }

// DataOffset returns the header length in bytes, options included.
func (t TCP) DataOffset() int { return int(t[12]>>4) * 4 }

// Flags returns the control bits.
func (t TCP) Flags() TCPFlags { return TCPFlags(t[13]) }

// Window returns the unscaled window field.
func (t TCP) Window() uint16 { return binary.BigEndian.Uint16(t[14:]) }

// Checksum returns the checksum field.
func (t TCP) Checksum() uint16 { return binary.BigEndian.Uint16(t[16:]) }

// Urgent returns the urgent pointer, meaningful when URG is set.
func (t TCP) Urgent() uint16 { return binary.BigEndian.Uint16(t[18:]) }

// Options returns the raw options bytes, padding included; parse them
// with ParseTCPOptions.
func (t TCP) Options() []byte { return t[TCPMinHeaderLen:t.DataOffset()] }

// Payload returns the segment data after the header.
func (t TCP) Payload() []byte { return t[t.DataOffset():] }

// ComputeChecksum returns the checksum the segment should carry between
// src and dst, computed as if the checksum field were zero.
func (t TCP) ComputeChecksum(src, dst netip.Addr) uint16 {
	return transportChecksum(t, 16, ProtoTCP, src, dst)
}

// SetSrcPort sets the source port.
func (t TCP) SetSrcPort(v uint16) { binary.BigEndian.PutUint16(t[0:], v) }

// SetDstPort sets the destination port.
func (t TCP) SetDstPort(v uint16) { binary.BigEndian.PutUint16(t[2:], v) }

// SetSeq sets the sequence number.
func (t TCP) SetSeq(v uint32) { binary.BigEndian.PutUint32(t[4:], v) }

// SetAck sets the acknowledgment number.
func (t TCP) SetAck(v uint32) { binary.BigEndian.PutUint32(t[8:], v) }

// SetDataOffset sets the header length in bytes, a multiple of 4 between
// 20 and 60; the reserved bits are cleared.
func (t TCP) SetDataOffset(n int) { t[12] = uint8(n/4) << 4 }

// SetFlags sets the control bits.
func (t TCP) SetFlags(f TCPFlags) { t[13] = uint8(f) }

// SetWindow sets the window field.
func (t TCP) SetWindow(v uint16) { binary.BigEndian.PutUint16(t[14:], v) }

// SetChecksum sets the checksum field.
func (t TCP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(t[16:], v) }

// SetUrgent sets the urgent pointer.
func (t TCP) SetUrgent(v uint16) { binary.BigEndian.PutUint16(t[18:], v) }

// transportChecksum returns the checksum field value for a TCP, UDP or
// ICMPv6 message b whose checksum field is at offset at, treating that
// field as zero, without modifying b.
func transportChecksum(b []byte, at int, proto uint8, src, dst netip.Addr) uint16 {
	s := PseudoHeaderChecksum(proto, src, dst, len(b))
	s = Checksum(b[:at], s)
	s = Checksum(b[at+2:], s)
	return ^s
}
