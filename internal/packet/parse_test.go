package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"unsafe"
)

// synV4 is a Linux-style SYN as tcpdump -x shows it: 198.18.0.1.42094 >
// 198.19.0.2.80, ID 0x1c46, DF, TTL 64, seq 0x5f3a1b2c, win 64240, options
// mss 1460, sackOK, TS val 0xa1b2c ecr 0, nop, wscale 7. The checksums were
// computed by an independent implementation.
const synV4 = `
0x0000:  4500 003c 1c46 4000 4006 924d c612 0001
0x0010:  c613 0002 a46e 0050 5f3a 1b2c 0000 0000
0x0020:  a002 faf0 868b 0000 0204 05b4 0402 080a
0x0030:  000a 1b2c 0000 0000 0103 0307`

// synAckV6 answers over IPv6: 2001:2::2.443 > 2001:2::1.51000, flow label
// 0x3a5b7, seq 0xfffffff0, ack 0x5f3a1b2d, win 65160, options mss 1440,
// sackOK, TS val 0x7d3c1a09 ecr 0xa1b2c, nop, wscale 9.
const synAckV6 = `
0x0000:  6003 a5b7 0028 0640 2001 0002 0000 0000
0x0010:  0000 0000 0000 0002 2001 0002 0000 0000
0x0020:  0000 0000 0000 0001 01bb c738 ffff fff0
0x0030:  5f3a 1b2d a012 fe88 13a9 0000 0204 05a0
0x0040:  0402 080a 7d3c 1a09 000a 1b2c 0103 0309`

func TestParseIP_CapturedIPv4SYN(t *testing.T) {
	b := append(hexBytes(t, synV4), 0, 0, 0, 0, 0, 0) // Ethernet minimum-frame padding
	p := mustParse(t, b)
	if p.Version != 4 || p.Proto != ProtoTCP || len(p.IP) != 60 || len(p.Transport) != 40 || len(p.Payload) != 0 {
		t.Fatalf("got version %d proto %d lengths ip %d transport %d payload %d",
			p.Version, p.Proto, len(p.IP), len(p.Transport), len(p.Payload))
	}
	if p.SrcAddrPort() != cli4 || p.DstAddrPort() != srv4 {
		t.Errorf("flow %v -> %v", p.SrcAddrPort(), p.DstAddrPort())
	}
	ip := p.IPv4()
	if ip.ID() != 0x1c46 || !ip.DontFragment() || ip.TTL() != 64 || ip.Checksum() != 0x924d {
		t.Errorf("IPv4 header: id %#x df %v ttl %d checksum %#x", ip.ID(), ip.DontFragment(), ip.TTL(), ip.Checksum())
	}
	tcp := p.TCP()
	if tcp.Seq() != 0x5f3a1b2c || tcp.Ack() != 0 || tcp.Flags() != SYN || tcp.Window() != 64240 ||
		tcp.DataOffset() != 40 || tcp.Checksum() != 0x868b {
		t.Errorf("TCP header: seq %#x ack %#x flags %v win %d doff %d sum %#x",
			tcp.Seq(), tcp.Ack(), tcp.Flags(), tcp.Window(), tcp.DataOffset(), tcp.Checksum())
	}
	o, err := ParseTCPOptions(tcp.Options())
	want := TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 0xa1b2c, HasTS: true, WScale: 7, HasWScale: true}
	if err != nil || o != want {
		t.Errorf("options %+v, %v", o, err)
	}
	// What the builder makes from the same fields is byte-identical, apart
	// from the IP ID (the builder writes 0) and so the header checksum.
	h := TCPHeader{Src: cli4, Dst: srv4, Seq: 0x5f3a1b2c, Flags: SYN, Window: 64240, Options: &want}
	built := buildTCP(t, h, nil)
	IPv4(built).SetID(0x1c46)
	IPv4(built).SetChecksum(IPv4(built).ComputeChecksum())
	if !bytes.Equal(built, p.IP) {
		t.Errorf("built % x\nwant  % x", built, p.IP)
	}
}

func TestParseIP_CapturedIPv6SYNACK(t *testing.T) {
	p := mustParse(t, hexBytes(t, synAckV6))
	if p.Version != 6 || p.Proto != ProtoTCP || p.SrcAddrPort() != srv6 || p.DstAddrPort() != cli6 {
		t.Fatalf("got v%d proto %d %v -> %v", p.Version, p.Proto, p.SrcAddrPort(), p.DstAddrPort())
	}
	ip := p.IPv6()
	if ip.FlowLabel() != 0x3a5b7 || ip.TrafficClass() != 0 || ip.HopLimit() != 64 || ip.PayloadLen() != 40 {
		t.Errorf("IPv6 header: flow %#x class %d hops %d plen %d", ip.FlowLabel(), ip.TrafficClass(), ip.HopLimit(), ip.PayloadLen())
	}
	tcp := p.TCP()
	if tcp.Flags() != SYN|ACK || tcp.Seq() != 0xfffffff0 || tcp.Ack() != 0x5f3a1b2d || tcp.Window() != 65160 {
		t.Errorf("TCP: flags %v seq %#x ack %#x win %d", tcp.Flags(), tcp.Seq(), tcp.Ack(), tcp.Window())
	}
	o, err := ParseTCPOptions(tcp.Options())
	want := TCPOptions{MSS: 1440, HasMSS: true, SACKPermitted: true, TSVal: 0x7d3c1a09, TSEcr: 0xa1b2c, HasTS: true, WScale: 9, HasWScale: true}
	if err != nil || o != want {
		t.Errorf("options %+v, %v", o, err)
	}
}

// corrupt returns a copy of b changed by f.
func corrupt(b []byte, f func(b []byte)) []byte {
	c := bytes.Clone(b)
	f(c)
	return c
}

// fixIPv4 recomputes the IPv4 header checksum after an edit.
func fixIPv4(b []byte) { IPv4(b).SetChecksum(IPv4(b).ComputeChecksum()) }

// withExtHeaders inserts IPv6 extension headers (each given with its next
// header byte still to be filled) between the fixed header and transport.
func withExtHeaders(t testing.TB, pkt []byte, types []uint8, lens []int) []byte {
	t.Helper()
	h := IPv6(pkt)
	out := bytes.Clone(pkt[:IPv6HeaderLen])
	next := h.NextHeader()
	IPv6(out).SetNextHeader(types[0])
	for i, typ := range types {
		nh := next
		if i+1 < len(types) {
			nh = types[i+1]
		}
		ext := make([]byte, lens[i])
		ext[0], ext[1] = nh, uint8(lens[i]/8-1)
		if typ == ProtoHopByHop || typ == ProtoDestOpts {
			ext[2], ext[3] = 1, uint8(lens[i]-4) // one PadN option filling the rest
		}
		out = append(out, ext...)
	}
	out = append(out, pkt[IPv6HeaderLen:]...)
	IPv6(out).SetPayloadLen(len(out) - IPv6HeaderLen)
	return out
}

func TestParseIP_Errors(t *testing.T) {
	syn := hexBytes(t, synV4)
	syn6 := hexBytes(t, synAckV6)
	udp4 := buildUDP(t, cli4, srv4, []byte("hello"))
	udp6 := buildUDP(t, cli6, srv6, []byte("hello"))
	echo4 := buildEcho(t, EchoHeader{Src: cli4.Addr(), Dst: srv4.Addr(), ID: 1, Seq: 2}, []byte("ping"))
	echo6 := buildEcho(t, EchoHeader{Src: cli6.Addr(), Dst: srv6.Addr(), ID: 1, Seq: 2}, []byte("ping"))

	tests := []struct {
		name string
		in   []byte
		want error // the specific error; its categories are checked too
		kind error
	}{
		{"empty", nil, errEmpty, ErrTruncated},
		{"version 5", []byte{0x55, 0, 0, 0}, errVersion, ErrBadHeader},
		{"IPv4 shorter than header", syn[:19], errIPv4Short, ErrTruncated},
		{"IPv4 IHL 4", corrupt(syn, func(b []byte) { b[0] = 0x44 }), errIPv4IHL, ErrBadHeader},
		{"IPv4 IHL past buffer", corrupt(syn[:24], func(b []byte) { b[0] = 0x47 }), errIPv4HeaderPast, ErrTruncated},
		{"IPv4 total below IHL", corrupt(syn, func(b []byte) { IPv4(b).SetTotalLen(19) }), errIPv4TotalLen, ErrBadHeader},
		{"IPv4 total past buffer", syn[:59], errIPv4TotalPast, ErrTruncated},
		{"IPv4 header checksum", corrupt(syn, func(b []byte) { b[8]-- }), errIPv4Checksum, ErrBadChecksum},
		{"IPv4 more fragments", corrupt(syn, func(b []byte) { IPv4(b).SetFlagsFragment(IPv4FlagMoreFragments); fixIPv4(b) }), errIPv4Fragment, ErrFragment},
		{"IPv4 fragment offset", corrupt(syn, func(b []byte) { IPv4(b).SetFlagsFragment(IPv4FlagDontFragment | 1); fixIPv4(b) }), errIPv4Fragment, ErrFragment},
		{"IPv4 protocol GRE", corrupt(syn, func(b []byte) { IPv4(b).SetProtocol(47); fixIPv4(b) }), errIPv4Proto, ErrUnsupported},
		{"ICMPv6 over IPv4", corrupt(syn, func(b []byte) { IPv4(b).SetProtocol(ProtoICMPv6); fixIPv4(b) }), errIPv4Proto, ErrUnsupported},
		{"TCP shorter than header", corrupt(syn[:39], func(b []byte) { IPv4(b).SetTotalLen(39); fixIPv4(b) }), errTCPShort, ErrTruncated},
		{"TCP data offset 4", corrupt(syn, func(b []byte) { b[32] = 0x40 }), errTCPDataOffset, ErrBadHeader},
		{"TCP data offset past segment", corrupt(syn, func(b []byte) { b[32] = 0xf0 }), errTCPOffsetPast, ErrTruncated},
		{"TCP checksum", corrupt(syn, func(b []byte) { b[len(b)-1] ^= 1 }), errTCPChecksum, ErrBadChecksum},
		{"TCP checksum covers addresses", corrupt(syn, func(b []byte) { b[19]++; fixIPv4(b) }), errTCPChecksum, ErrBadChecksum},
		{"UDP shorter than header", corrupt(udp4[:27], func(b []byte) { IPv4(b).SetTotalLen(27); fixIPv4(b) }), errUDPShort, ErrTruncated},
		{"UDP length 7", corrupt(udp4, func(b []byte) { UDP(b[20:]).SetLength(7) }), errUDPLength, ErrBadHeader},
		{"UDP length past packet", corrupt(udp4, func(b []byte) { UDP(b[20:]).SetLength(14) }), errUDPLengthPast, ErrTruncated},
		{"UDP checksum", corrupt(udp4, func(b []byte) { b[len(b)-1]++ }), errUDPChecksum, ErrBadChecksum},
		{"UDP over IPv6 without checksum", corrupt(udp6, func(b []byte) { UDP(b[40:]).SetChecksum(0) }), errUDPv6NoSum, ErrBadChecksum},
		{"ICMP shorter than header", corrupt(echo4[:27], func(b []byte) { IPv4(b).SetTotalLen(27); fixIPv4(b) }), errICMPShort, ErrTruncated},
		{"ICMPv4 checksum", corrupt(echo4, func(b []byte) { b[len(b)-1]++ }), errICMPChecksum, ErrBadChecksum},
		{"ICMPv6 checksum covers pseudo-header", corrupt(echo6, func(b []byte) { b[39]++ }), errICMPChecksum, ErrBadChecksum},
		{"IPv6 shorter than header", syn6[:39], errIPv6Short, ErrTruncated},
		{"IPv6 payload length past buffer", syn6[:79], errIPv6PayloadLen, ErrTruncated},
		{"IPv6 fragment header", withExtHeaders(t, syn6, []uint8{ProtoFragment}, []int{8}), errIPv6Fragment, ErrFragment},
		{"IPv6 hop-by-hop after destination options", withExtHeaders(t, syn6, []uint8{ProtoDestOpts, ProtoHopByHop}, []int{8, 8}), errIPv6HopByHop, ErrBadHeader},
		{"IPv6 routing with segments left", corrupt(withExtHeaders(t, syn6, []uint8{ProtoRouting}, []int{24}), func(b []byte) { b[43] = 1 }), errIPv6Routing, ErrUnsupported},
		{"IPv6 extension header length past packet", corrupt(withExtHeaders(t, syn6, []uint8{ProtoDestOpts}, []int{8}), func(b []byte) { b[41] = 200 }), errIPv6ExtPast, ErrTruncated},
		{"IPv6 extension header cut short", corrupt(syn6[:44], func(b []byte) { IPv6(b).SetNextHeader(ProtoDestOpts); IPv6(b).SetPayloadLen(4) }), errIPv6ExtPast, ErrTruncated},
		{"IPv6 no next header", corrupt(syn6, func(b []byte) { IPv6(b).SetNextHeader(ProtoNoNext) }), errIPv6NoNext, ErrUnsupported},
		{"IPv6 ESP", corrupt(syn6, func(b []byte) { IPv6(b).SetNextHeader(ProtoESP) }), errIPv6Proto, ErrUnsupported},
		{"ICMPv4 over IPv6", corrupt(syn6, func(b []byte) { IPv6(b).SetNextHeader(ProtoICMPv4) }), errIPv6Proto, ErrUnsupported},
		{"IPv6 TCP checksum", corrupt(syn6, func(b []byte) { b[8] ^= 0x80 }), errTCPChecksum, ErrBadChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseIP(tt.in)
			if err != tt.want {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("err %v does not match %v", err, tt.kind)
			}
			if p.IP != nil || p.Version != 0 {
				t.Errorf("failed parse returned %+v, want the zero Packet", p)
			}
		})
	}
}

func TestParseIP_IPv6FragmentIsAlsoUnsupported(t *testing.T) {
	_, err := ParseIP(withExtHeaders(t, hexBytes(t, synAckV6), []uint8{ProtoFragment}, []int{8}))
	if !errors.Is(err, ErrFragment) || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("err = %v, want both ErrFragment and ErrUnsupported", err)
	}
}

func TestParseIP_IPv6WalksExtensionHeadersToTransport(t *testing.T) {
	syn6 := hexBytes(t, synAckV6)
	chains := [][]uint8{
		{ProtoHopByHop},
		{ProtoHopByHop, ProtoDestOpts, ProtoRouting, ProtoDestOpts},
		{ProtoRouting},
	}
	for _, chain := range chains {
		lens := make([]int, len(chain))
		for i := range lens {
			lens[i] = 8 * (i + 1)
		}
		b := withExtHeaders(t, syn6, chain, lens)
		p := mustParse(t, b)
		if p.Proto != ProtoTCP || !bytes.Equal(p.Transport, syn6[IPv6HeaderLen:]) || len(p.IP) != len(b) {
			t.Errorf("chain %v: proto %d transport % x", chain, p.Proto, p.Transport)
		}
	}
}

func TestParseIP_UDPOverIPv4WithoutChecksumIsAccepted(t *testing.T) {
	b := buildUDP(t, cli4, srv4, []byte("no sum"))
	UDP(b[20:]).SetChecksum(0)
	p := mustParse(t, b)
	if string(p.Payload) != "no sum" {
		t.Fatalf("payload %q", p.Payload)
	}
}

func TestParseIP_UDPTrimsToItsLengthAndIPTrimsPadding(t *testing.T) {
	b := buildUDP(t, cli6, srv6, []byte("abcdef"))
	b = append(b, "junk"...) // link-layer padding beyond the IPv6 payload length
	p := mustParse(t, b)
	if len(p.IP) != len(b)-4 || string(p.Payload) != "abcdef" {
		t.Fatalf("IP %d bytes, payload %q", len(p.IP), p.Payload)
	}

	// A UDP length below the IP payload: the datagram ends there, and the
	// checksum covers only that much (RFC 768).
	b4 := buildUDP(t, cli4, srv4, []byte("abc"))
	b4 = append(b4, 0xee, 0xee)
	IPv4(b4).SetTotalLen(len(b4))
	fixIPv4(b4)
	p = mustParse(t, b4)
	if string(p.Payload) != "abc" || len(p.Transport) != 11 || len(p.IP) != len(b4) {
		t.Fatalf("payload %q transport %d IP %d", p.Payload, len(p.Transport), len(p.IP))
	}
}

func TestParseIP_DoesNotAllocate(t *testing.T) {
	valid := [][]byte{
		hexBytes(t, synV4),
		hexBytes(t, synAckV6),
		buildUDP(t, cli6, srv6, []byte("x")),
		buildEcho(t, EchoHeader{Src: cli4.Addr(), Dst: srv4.Addr()}, nil),
	}
	invalid := [][]byte{nil, {0x45}, corrupt(valid[0], func(b []byte) { b[30]++ })}
	for _, b := range append(valid, invalid...) {
		if n := testing.AllocsPerRun(100, func() { _, _ = ParseIP(b) }); n != 0 {
			t.Errorf("ParseIP(% x...) allocates %v times", b[:min(len(b), 4)], n)
		}
	}
}

func BenchmarkParseIPv4TCP(b *testing.B) {
	pkt := buildTCP(b, TCPHeader{Src: cli4, Dst: srv4, Flags: ACK | PSH, Window: 512,
		Options: &TCPOptions{HasTS: true, TSVal: 1}}, make([]byte, 1448))
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseIP(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

// within reports whether inner lies inside outer's memory, starting at
// offset off. An empty inner is taken to sit at the end of outer, since
// Go does not move the pointer of a slice with no capacity left.
func within(outer, inner []byte) (off int, ok bool) {
	if len(inner) == 0 {
		return len(outer), true
	}
	o, i := uintptr(unsafe.Pointer(unsafe.SliceData(outer))), uintptr(unsafe.Pointer(unsafe.SliceData(inner)))
	if i < o || i+uintptr(len(inner)) > o+uintptr(len(outer)) {
		return 0, false
	}
	return int(i - o), true
}

func FuzzParseIP(f *testing.F) {
	f.Add(hexBytes(f, synV4))
	f.Add(hexBytes(f, synAckV6))
	f.Add(buildUDP(f, cli4, srv4, []byte("hello")))
	f.Add(buildUDP(f, cli6, srv6, []byte("hello")))
	f.Add(buildEcho(f, EchoHeader{Src: cli4.Addr(), Dst: srv4.Addr(), ID: 7}, []byte("ping")))
	f.Add(buildEcho(f, EchoHeader{Src: cli6.Addr(), Dst: srv6.Addr(), ID: 7}, []byte("ping")))
	f.Add(withExtHeaders(f, hexBytes(f, synAckV6), []uint8{ProtoHopByHop, ProtoDestOpts}, []int{8, 16}))
	f.Add(withExtHeaders(f, hexBytes(f, synAckV6), []uint8{ProtoFragment}, []int{8}))
	f.Add([]byte{0x46, 0, 0, 20})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseIP(b)
		if err != nil {
			for _, kind := range []error{ErrTruncated, ErrBadHeader, ErrBadChecksum, ErrFragment, ErrUnsupported} {
				if errors.Is(err, kind) {
					return
				}
			}
			t.Fatalf("error %v matches no category", err)
		}
		checkPacket(t, b, p)
	})
}

// FuzzParseIPTrusted: the trusted parse takes whatever ParseIP takes, with
// the same result, and what it takes alone differs only in a transport
// checksum.
func FuzzParseIPTrusted(f *testing.F) {
	f.Add(hexBytes(f, synV4))
	f.Add(hexBytes(f, synAckV6))
	f.Add(buildUDP(f, cli4, srv4, []byte("hello")))
	f.Add(buildEcho(f, EchoHeader{Src: cli6.Addr(), Dst: srv6.Addr(), ID: 7}, []byte("ping")))
	f.Fuzz(func(t *testing.T, b []byte) {
		tp, terr := ParseIPTrusted(b)
		p, err := ParseIP(b)
		switch {
		case err == nil && terr != nil:
			t.Fatalf("ParseIP takes it, ParseIPTrusted: %v", terr)
		case err == nil:
			if tp.Proto != p.Proto || len(tp.IP) != len(p.IP) || len(tp.Transport) != len(p.Transport) || len(tp.Payload) != len(p.Payload) {
				t.Fatalf("trusted parse differs: %+v vs %+v", tp, p)
			}
		case terr == nil:
			if !errors.Is(err, ErrBadChecksum) || (p.Version == 4 && !IPv4(b).ChecksumValid()) {
				t.Fatalf("trusted parse took a packet ParseIP refused for %v", err)
			}
			if _, ok := within(b, tp.Transport); !ok || len(tp.Payload) > len(tp.Transport) {
				t.Fatal("transport or payload outside the packet")
			}
		}
	})
}

// checkPacket asserts the invariants of a successful parse of b.
func checkPacket(t *testing.T, b []byte, p Packet) {
	t.Helper()
	if off, ok := within(b, p.IP); !ok || off != 0 {
		t.Fatalf("IP is not a prefix of the input")
	}
	toff, ok := within(p.IP, p.Transport)
	if !ok || toff < IPv4MinHeaderLen {
		t.Fatalf("transport not inside IP after a header (offset %d)", toff)
	}
	poff, ok := within(p.Transport, p.Payload)
	if !ok || poff+len(p.Payload) != len(p.Transport) {
		t.Fatalf("payload is not a suffix of the transport")
	}
	switch p.Version {
	case 4:
		ip := p.IPv4()
		if ip.TotalLen() != len(p.IP) || ip.HeaderLen() != toff || ip.Src() != p.Src || !ip.ChecksumValid() ||
			ip.Protocol() != p.Proto || toff+len(p.Transport) > len(p.IP) {
			t.Fatalf("IPv4 fields disagree with the parse")
		}
	case 6:
		ip := p.IPv6()
		if ip.PayloadLen()+IPv6HeaderLen != len(p.IP) || ip.Src() != p.Src || ip.Dst() != p.Dst || toff < IPv6HeaderLen {
			t.Fatalf("IPv6 fields disagree with the parse")
		}
	default:
		t.Fatalf("version %d", p.Version)
	}
	switch p.Proto {
	case ProtoTCP:
		// 0x0000 and 0xffff are the two zeros of one's complement and
		// both verify.
		sum, field := p.TCP().ComputeChecksum(p.Src, p.Dst), p.TCP().Checksum()
		if p.TCP().DataOffset() != poff || poff < TCPMinHeaderLen || toff+len(p.Transport) != len(p.IP) ||
			(sum != field && !(sum == 0 && field == 0xffff)) {
			t.Fatalf("TCP lengths or checksum disagree")
		}
	case ProtoUDP:
		if p.UDP().Length() != len(p.Transport) || poff != UDPHeaderLen {
			t.Fatalf("UDP lengths disagree")
		}
	case ProtoICMPv4, ProtoICMPv6:
		if poff != ICMPHeaderLen || toff+len(p.Transport) != len(p.IP) {
			t.Fatalf("ICMP lengths disagree")
		}
	default:
		t.Fatalf("proto %d", p.Proto)
	}
	if p.Proto == ProtoTCP || p.Proto == ProtoUDP {
		if p.SrcAddrPort().Port() != binary.BigEndian.Uint16(p.Transport) {
			t.Fatalf("source port disagrees")
		}
	}
	if p.Src.Is4() != (p.Version == 4) || p.Dst == (netip.Addr{}) {
		t.Fatalf("address family disagrees with version")
	}
}
