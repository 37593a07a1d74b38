package packet

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestTCPFlags_StringLikePacketdrill(t *testing.T) {
	tests := []struct {
		f    TCPFlags
		want string
	}{
		{0, "none"},
		{SYN, "S"},
		{SYN | ACK, "S."},
		{ACK, "."},
		{PSH | ACK, "P."},
		{FIN | ACK, "F."},
		{FIN | PSH | ACK, "FP."},
		{RST, "R"},
		{RST | ACK, "R."},
		{SYN | ECE | CWR, "SEW"},
		{URG | ACK, ".U"},
		{0xff, "FSRP.UEW"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("%#02x: %q, want %q", uint8(tt.f), got, tt.want)
		}
		if got := FlagString(uint8(tt.f)); got != tt.want {
			t.Errorf("FlagString(%#02x) = %q", uint8(tt.f), got)
		}
	}
	if !(SYN | ACK).Has(SYN) || (SYN | ACK).Has(SYN|FIN) {
		t.Error("Has")
	}
}

func TestIPv4_SettersRoundTripThroughAccessors(t *testing.T) {
	h := IPv4(make([]byte, 28))
	src, dst := netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.19.3.4")
	h.SetVersionHeaderLen(24)
	h.SetTOS(0xb8)
	h.SetTotalLen(28)
	h.SetID(0xbeef)
	h.SetFlagsFragment(IPv4FlagMoreFragments | 3)
	h.SetTTL(17)
	h.SetProtocol(ProtoUDP)
	h.SetSrc(src)
	h.SetDst(dst)
	copy(h[20:24], "opts")
	copy(h[24:], "data")
	h.SetChecksum(h.ComputeChecksum())
	switch {
	case h.Version() != 4, h.HeaderLen() != 24, h.TOS() != 0xb8, h.TotalLen() != 28, h.ID() != 0xbeef:
		t.Errorf("version %d hl %d tos %#x total %d id %#x", h.Version(), h.HeaderLen(), h.TOS(), h.TotalLen(), h.ID())
	case !h.MoreFragments(), h.DontFragment(), h.FragmentOffset() != 24:
		t.Errorf("mf %v df %v offset %d", h.MoreFragments(), h.DontFragment(), h.FragmentOffset())
	case h.TTL() != 17, h.Protocol() != ProtoUDP, h.Src() != src, h.Dst() != dst:
		t.Errorf("ttl %d proto %d %v -> %v", h.TTL(), h.Protocol(), h.Src(), h.Dst())
	case string(h.Options()) != "opts", string(h.Payload()) != "data", !h.ChecksumValid():
		t.Errorf("options %q payload %q checksum valid %v", h.Options(), h.Payload(), h.ChecksumValid())
	}
	h.SetTTL(16)
	if h.ChecksumValid() {
		t.Error("checksum still valid after TTL change")
	}
}

func TestIPv6_SettersRoundTripThroughAccessors(t *testing.T) {
	h := IPv6(make([]byte, 44))
	src, dst := netip.MustParseAddr("2001:2::a"), netip.MustParseAddr("2001:2:ffff::b")
	h.SetVersionClassFlow(0xb8, 0xfedcba) // flow label keeps 20 bits
	h.SetPayloadLen(4)
	h.SetNextHeader(ProtoICMPv6)
	h.SetHopLimit(255)
	h.SetSrc(src)
	h.SetDst(dst)
	copy(h[40:], "data")
	if h.Version() != 6 || h.TrafficClass() != 0xb8 || h.FlowLabel() != 0xedcba || h.PayloadLen() != 4 ||
		h.NextHeader() != ProtoICMPv6 || h.HopLimit() != 255 || h.Src() != src || h.Dst() != dst ||
		string(h.Payload()) != "data" {
		t.Errorf("v%d class %#x flow %#x plen %d nh %d hops %d %v -> %v payload %q", h.Version(), h.TrafficClass(),
			h.FlowLabel(), h.PayloadLen(), h.NextHeader(), h.HopLimit(), h.Src(), h.Dst(), h.Payload())
	}
}

func TestTCP_SettersRoundTripThroughAccessors(t *testing.T) {
	s := TCP(make([]byte, 32))
	s.SetSrcPort(1)
	s.SetDstPort(65535)
	s.SetSeq(0xffffffff)
	s.SetAck(0x80000000)
	s.SetDataOffset(24)
	s.SetFlags(FIN | URG)
	s.SetWindow(0xabcd)
	s.SetChecksum(0x1234)
	s.SetUrgent(6)
	copy(s[20:], "opt!payload!")
	if s.SrcPort() != 1 || s.DstPort() != 65535 || s.Seq() != 0xffffffff || s.Ack() != 0x80000000 ||
		s.DataOffset() != 24 || s.Flags() != FIN|URG || s.Window() != 0xabcd || s.Checksum() != 0x1234 ||
		s.Urgent() != 6 || string(s.Options()) != "opt!" || string(s.Payload()) != "payload!" {
		t.Errorf("ports %d %d seq %#x ack %#x doff %d flags %v win %#x sum %#x urg %d opts %q payload %q",
			s.SrcPort(), s.DstPort(), s.Seq(), s.Ack(), s.DataOffset(), s.Flags(), s.Window(), s.Checksum(),
			s.Urgent(), s.Options(), s.Payload())
	}
}

func TestTCP_ComputeChecksumIgnoresCurrentField(t *testing.T) {
	p := mustParse(t, hexBytes(t, synV4))
	want := p.TCP().Checksum()
	p.TCP().SetChecksum(0xdead)
	if got := p.TCP().ComputeChecksum(p.Src, p.Dst); got != want {
		t.Fatalf("ComputeChecksum = %#04x, want %#04x", got, want)
	}
}

func TestUDP_SettersRoundTripThroughAccessors(t *testing.T) {
	u := UDP(make([]byte, 14))
	u.SetSrcPort(53)
	u.SetDstPort(5353)
	u.SetLength(12)
	u.SetChecksum(0xffff)
	copy(u[8:], "dnsXYZ")
	if u.SrcPort() != 53 || u.DstPort() != 5353 || u.Length() != 12 || u.Checksum() != 0xffff || string(u.Payload()) != "dnsX" {
		t.Errorf("ports %d %d len %d sum %#x payload %q", u.SrcPort(), u.DstPort(), u.Length(), u.Checksum(), u.Payload())
	}
}

func TestUDP_ComputedZeroChecksumIsSentAsAllOnes(t *testing.T) {
	// Choose the payload word so that the one's complement sum is all
	// ones, which makes the computed checksum 0.
	src, dst := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	u := UDP(make([]byte, 10))
	u.SetSrcPort(1)
	u.SetDstPort(2)
	u.SetLength(10)
	s := ChecksumCombine(PseudoHeaderChecksum(ProtoUDP, src, dst, 10), Checksum(u[:8], 0))
	u[8], u[9] = byte(^s>>8), byte(^s)
	if got := u.ComputeChecksum(src, dst); got != 0xffff {
		t.Fatalf("ComputeChecksum = %#04x, want 0xffff", got)
	}
}

func TestICMP_SettersRoundTripThroughAccessors(t *testing.T) {
	for _, m := range []interface {
		SetType(uint8)
		SetCode(uint8)
		SetChecksum(uint16)
		SetID(uint16)
		SetSeq(uint16)
		Type() uint8
		Code() uint8
		Checksum() uint16
		ID() uint16
		Seq() uint16
		Payload() []byte
	}{ICMPv4(make([]byte, 12)), ICMPv6(make([]byte, 12))} {
		m.SetType(3)
		m.SetCode(4)
		m.SetChecksum(0x5566)
		m.SetID(0x7788)
		m.SetSeq(0x99aa)
		if m.Type() != 3 || m.Code() != 4 || m.Checksum() != 0x5566 || m.ID() != 0x7788 || m.Seq() != 0x99aa || len(m.Payload()) != 4 {
			t.Errorf("%T: type %d code %d sum %#x id %#x seq %#x", m, m.Type(), m.Code(), m.Checksum(), m.ID(), m.Seq())
		}
	}
}

func TestICMPv6_ChecksumCoversPseudoHeaderButICMPv4DoesNot(t *testing.T) {
	msg := []byte{ICMPv6EchoRequest, 0, 0, 0, 0, 1, 0, 2}
	a, b := netip.MustParseAddr("2001:2::1"), netip.MustParseAddr("2001:2::2")
	if ICMPv6(msg).ComputeChecksum(a, b) == ICMPv6(msg).ComputeChecksum(b, netip.MustParseAddr("2001:2::3")) {
		t.Error("ICMPv6 checksum does not depend on the addresses")
	}
	want := ^refSum(msg, 0)
	if got := ICMPv4(bytes.Clone(msg)).ComputeChecksum(); got != want {
		t.Errorf("ICMPv4 checksum %#04x, want %#04x", got, want)
	}
}

func TestPacket_AccessorsAreViewsOfTheInput(t *testing.T) {
	b := hexBytes(t, synV4)
	p := mustParse(t, b)
	p.TCP().SetWindow(1)
	if IPv4(b).Payload()[14] != 0 || IPv4(b).Payload()[15] != 1 {
		t.Fatal("writing through Packet.TCP did not change the input buffer")
	}
	if p.IPv4().Src() != cli4.Addr() {
		t.Fatal("IPv4 view")
	}
}
