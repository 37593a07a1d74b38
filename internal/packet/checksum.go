package packet

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Checksum returns the 16-bit one's complement sum (RFC 1071) of b, added
// to initial with end-around carry. The result is not complemented: a
// header's checksum field holds ^Checksum(...), and a received header is
// intact when Checksum over it, field included, is 0xffff.
//
// initial carries a partial sum, typically PseudoHeaderChecksum. When a
// message is summed in pieces, every piece but the last must have an even
// length.
func Checksum(b []byte, initial uint16) uint16 {
	// RFC 1071 §2(B): the sum is independent of byte order, so words are
	// loaded little-endian (a plain load on common hardware) and the folded
	// result is swapped back once at the end.
	s := fold64(sumLE(b))
	return ChecksumCombine(bits.ReverseBytes16(s), initial)
}

// sumLE adds b as little-endian 64-bit words with end-around carry. The
// carry out of each add feeds the next one (RFC 1071 §2(C), deferred
// carries), so the loop costs one add-with-carry per 8 bytes.
func sumLE(b []byte) uint64 {
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[0:8]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:16]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:24]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	// The tail (< 8 bytes) becomes one zero-padded little-endian word;
	// every byte keeps its position, so 16-bit lanes stay aligned.
	var tail uint64
	var shift uint
	if len(b) >= 4 {
		tail = uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
		shift = 32
	}
	if len(b) >= 2 {
		tail |= uint64(binary.LittleEndian.Uint16(b)) << shift
		b = b[2:]
		shift += 16
	}
	if len(b) == 1 {
		tail |= uint64(b[0]) << shift
	}
	s, c = bits.Add64(s, tail, c)
	s, c = bits.Add64(s, 0, c)
	return s + c
}

// fold64 reduces a 64-bit one's complement accumulator to 16 bits.
func fold64(s uint64) uint16 {
	s = s&0xffffffff + s>>32
	s = s&0xffffffff + s>>32
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return uint16(s)
}

// ChecksumCombine adds two partial one's complement sums.
func ChecksumCombine(a, b uint16) uint16 {
	s := uint32(a) + uint32(b)
	return uint16(s&0xffff + s>>16)
}

// PseudoHeaderChecksum returns the partial sum of the pseudo-header that
// TCP, UDP and ICMPv6 checksums cover: RFC 9293 §3.1 and RFC 768 for IPv4
// (src, dst, zero, protocol, 16-bit length), RFC 8200 §8.1 for IPv6 (src,
// dst, 32-bit upper-layer length, zeros, next header). length is the
// transport header plus payload. src and dst must be of the same family;
// an IPv4-mapped IPv6 address counts as IPv6.
func PseudoHeaderChecksum(proto uint8, src, dst netip.Addr, length int) uint16 {
	s := uint64(proto) + uint64(uint32(length)>>16) + uint64(uint16(length))
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		s += uint64(binary.BigEndian.Uint32(a[:])) + uint64(binary.BigEndian.Uint32(b[:]))
		return fold64(s)
	}
	a, b := src.As16(), dst.As16()
	for i := 0; i < 16; i += 4 {
		s += uint64(binary.BigEndian.Uint32(a[i:])) + uint64(binary.BigEndian.Uint32(b[i:]))
	}
	return fold64(s)
}

// UpdateChecksum16 returns a header checksum field value after a 16-bit
// word covered by it changed from old to new, without summing the whole
// message again (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')). The word must
// sit at an even offset of the checksummed data.
func UpdateChecksum16(check, old, new uint16) uint16 {
	return ^ChecksumCombine(ChecksumCombine(^check, ^old), new)
}

// UpdateChecksum32 is UpdateChecksum16 for a 32-bit field at an even
// offset, such as a sequence number or an IPv4 address.
func UpdateChecksum32(check uint16, old, new uint32) uint16 {
	check = UpdateChecksum16(check, uint16(old>>16), uint16(new>>16))
	return UpdateChecksum16(check, uint16(old), uint16(new))
}
