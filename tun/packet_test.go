package tun_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// udpPacket builds an IPv4 or IPv6 UDP packet with correct checksums.
func udpPacket(t *testing.T, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	if src.Addr().Is4() != dst.Addr().Is4() {
		t.Fatalf("udpPacket: mixed families %s -> %s", src, dst)
	}
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	sum := checksum(pseudoHeader(src.Addr(), dst.Addr(), 17, len(udp)), udp)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	if src.Addr().Is4() {
		return append(ipv4Header(src.Addr(), dst.Addr(), 17, len(udp)), udp...)
	}
	return append(ipv6Header(src.Addr(), dst.Addr(), 17, len(udp)), udp...)
}

func ipv4Header(src, dst netip.Addr, proto byte, payloadLen int) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+payloadLen))
	binary.BigEndian.PutUint16(h[4:], 0x1234)
	binary.BigEndian.PutUint16(h[6:], 0x4000) // DF
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(nil, h))
	return h
}

func ipv6Header(src, dst netip.Addr, proto byte, payloadLen int) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(payloadLen))
	h[6] = proto
	h[7] = 64
	s, d := src.As16(), dst.As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return h
}

func pseudoHeader(src, dst netip.Addr, proto byte, length int) []byte {
	p := append(src.AsSlice(), dst.AsSlice()...)
	if src.Is4() {
		return append(p, 0, proto, byte(length>>8), byte(length))
	}
	return append(p, byte(length>>24), byte(length>>16), byte(length>>8), byte(length), 0, 0, 0, proto)
}

// checksum is the Internet checksum (RFC 1071) over a then b; a has even
// length.
func checksum(a, b []byte) uint16 {
	var sum uint32
	for _, part := range [][]byte{a, b} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(part[i:]))
		}
		if len(part)%2 == 1 {
			sum += uint32(part[len(part)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// udp4Fields is what parseUDP4 finds in an IPv4 UDP packet.
type udp4Fields struct {
	src, dst   netip.AddrPort
	payload    []byte
	checksumOK bool
}

// parseUDP4 decodes an IPv4 UDP packet without options; ok is false for
// anything else.
func parseUDP4(pkt []byte) (f udp4Fields, ok bool) {
	if len(pkt) < 28 || pkt[0] != 0x45 || pkt[9] != 17 {
		return f, false
	}
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if total > len(pkt) || total < 28 {
		return f, false
	}
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	dst := netip.AddrFrom4([4]byte(pkt[16:20]))
	udp := pkt[20:total]
	f.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:]))
	f.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:]))
	f.payload = udp[8:]
	f.checksumOK = checksum(nil, pkt[:20]) == 0 &&
		checksum(pseudoHeader(src, dst, 17, len(udp)), udp) == 0
	return f, true
}

func TestUDPPacket_BuildsPacketsWithValidChecksums(t *testing.T) {
	src := netip.MustParseAddrPort("198.18.0.1:4000")
	dst := netip.MustParseAddrPort("198.19.5.9:9")
	f, ok := parseUDP4(udpPacket(t, src, dst, []byte("hello")))
	if !ok || !f.checksumOK || f.src != src || f.dst != dst || string(f.payload) != "hello" {
		t.Fatalf("parseUDP4 = %+v, %v", f, ok)
	}
	// A wrong payload byte must break the checksum, or the check proves nothing.
	pkt := udpPacket(t, src, dst, []byte("hello"))
	pkt[len(pkt)-1] ^= 0xff
	if f, _ := parseUDP4(pkt); f.checksumOK {
		t.Fatal("corrupted packet passed the checksum check")
	}
}
