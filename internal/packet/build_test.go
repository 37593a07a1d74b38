package packet

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestBuildTCP_RoundTrip(t *testing.T) {
	opts := &TCPOptions{HasTS: true, TSVal: 9, TSEcr: 8, SACKBlocks: [4]SACKBlock{{100, 200}}, NumSACK: 1}
	tests := []struct {
		name     string
		src, dst netip.AddrPort
	}{
		{"IPv4", cli4, srv4},
		{"IPv6", cli6, srv6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := TCPHeader{Src: tt.src, Dst: tt.dst, Seq: 0xfffffffe, Ack: 7, Flags: PSH | ACK, Window: 1000,
				Urgent: 3, Options: opts, TTL: 5}
			p := mustParse(t, buildTCP(t, h, []byte("payload")))
			tcp := p.TCP()
			if p.SrcAddrPort() != tt.src || p.DstAddrPort() != tt.dst || tcp.Seq() != h.Seq || tcp.Ack() != h.Ack ||
				tcp.Flags() != h.Flags || tcp.Window() != h.Window || tcp.Urgent() != h.Urgent ||
				string(p.Payload) != "payload" {
				t.Fatalf("parsed back %v->%v seq %d ack %d flags %v win %d urg %d payload %q", p.SrcAddrPort(), p.DstAddrPort(),
					tcp.Seq(), tcp.Ack(), tcp.Flags(), tcp.Window(), tcp.Urgent(), p.Payload)
			}
			if got, err := ParseTCPOptions(tcp.Options()); err != nil || got != *opts {
				t.Errorf("options %+v, %v", got, err)
			}
			if p.Version == 4 {
				ip := p.IPv4()
				if ip.TTL() != 5 || !ip.DontFragment() || ip.ID() != 0 || ip.TOS() != 0 || ip.HeaderLen() != 20 {
					t.Errorf("IPv4 ttl %d df %v id %d tos %d", ip.TTL(), ip.DontFragment(), ip.ID(), ip.TOS())
				}
			} else if hl := p.IPv6().HopLimit(); hl != 5 {
				t.Errorf("hop limit %d", hl)
			}
		})
	}
}

func TestBuildTCP_RawOptionsAndDefaults(t *testing.T) {
	raw := []byte{TCPOptNOP, TCPOptNOP, TCPOptNOP, TCPOptEOL}
	p := mustParse(t, buildTCP(t, TCPHeader{Src: cli4, Dst: srv4, Flags: RST, RawOptions: raw}, nil))
	if !bytes.Equal(p.TCP().Options(), raw) || p.IPv4().TTL() != DefaultTTL || len(p.Payload) != 0 {
		t.Fatalf("options % x ttl %d", p.TCP().Options(), p.IPv4().TTL())
	}
}

func TestBuildTCP_Errors(t *testing.T) {
	ok := TCPHeader{Src: cli4, Dst: srv4}
	tests := []struct {
		name    string
		h       TCPHeader
		buf     int
		payload int
		want    error
	}{
		{"mixed families", TCPHeader{Src: cli4, Dst: srv6}, 100, 0, ErrAddress},
		{"zero address", TCPHeader{Dst: srv4}, 100, 0, ErrAddress},
		{"both option forms", TCPHeader{Src: cli4, Dst: srv4, Options: &TCPOptions{}, RawOptions: []byte{}}, 100, 0, ErrBadOptions},
		{"raw options not a multiple of 4", TCPHeader{Src: cli4, Dst: srv4, RawOptions: []byte{1}}, 100, 0, ErrBadOptions},
		{"raw options over 40 bytes", TCPHeader{Src: cli4, Dst: srv4, RawOptions: make([]byte, 44)}, 100, 0, ErrBadOptions},
		{"buffer one byte short", ok, 40 + 9, 10, ErrShortBuffer},
		{"IPv4 total over 65535", ok, 70000, 65535 - 40 + 1, ErrTooLarge},
		{"IPv6 payload over 65535", TCPHeader{Src: cli6, Dst: srv6}, 70000, 65535 - 20 + 1, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := BuildTCP(make([]byte, tt.buf), tt.h, make([]byte, tt.payload))
			if !errors.Is(err, tt.want) || n != 0 {
				t.Fatalf("BuildTCP = %d, %v; want 0, %v", n, err, tt.want)
			}
		})
	}
}

func TestBuildTCP_LargestPacketsFit(t *testing.T) {
	b := make([]byte, 70000)
	if n, err := BuildTCP(b, TCPHeader{Src: cli4, Dst: srv4}, make([]byte, 65535-40)); err != nil || n != 65535 {
		t.Errorf("IPv4: %d, %v", n, err)
	}
	if n, err := BuildTCP(b, TCPHeader{Src: cli6, Dst: srv6}, make([]byte, 65535-20)); err != nil || n != 65535+40 {
		t.Errorf("IPv6: %d, %v", n, err)
	}
}

func TestTCPHeader_PacketLenMatchesBuild(t *testing.T) {
	for _, h := range []TCPHeader{
		{Src: cli4, Dst: srv4},
		{Src: cli6, Dst: srv6, Options: &TCPOptions{HasMSS: true, HasTS: true}},
	} {
		want, err := h.PacketLen(33)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(buildTCP(t, h, make([]byte, 33))); got != want {
			t.Errorf("PacketLen %d, built %d", want, got)
		}
	}
	if _, err := (&TCPHeader{Src: cli4, Dst: srv6}).PacketLen(0); !errors.Is(err, ErrAddress) {
		t.Errorf("mixed families: %v", err)
	}
}

func TestBuildTCP_PayloadAlreadyInPlace(t *testing.T) {
	b := make([]byte, 100)
	copy(b[40:], "in place")
	n, err := BuildTCP(b, TCPHeader{Src: cli4, Dst: srv4, Flags: ACK}, b[40:48])
	if err != nil {
		t.Fatal(err)
	}
	if p := mustParse(t, b[:n]); string(p.Payload) != "in place" {
		t.Fatalf("payload %q", p.Payload)
	}
}

func TestBuildUDP_RoundTrip(t *testing.T) {
	for _, ends := range [][2]netip.AddrPort{{cli4, srv4}, {cli6, srv6}} {
		p := mustParse(t, buildUDP(t, ends[0], ends[1], []byte("datagram")))
		if p.Proto != ProtoUDP || p.SrcAddrPort() != ends[0] || p.DstAddrPort() != ends[1] ||
			string(p.Payload) != "datagram" || p.UDP().Length() != 16 || p.UDP().Checksum() == 0 {
			t.Errorf("%v: parsed %+v", ends, p)
		}
	}
}

func TestBuildUDP_Errors(t *testing.T) {
	if _, err := BuildUDP(make([]byte, 27), UDPHeader{Src: cli4, Dst: srv4}, nil); !errors.Is(err, ErrShortBuffer) {
		t.Errorf("short buffer: %v", err)
	}
	if _, err := BuildUDP(make([]byte, 100), UDPHeader{Src: cli4, Dst: srv6}, nil); !errors.Is(err, ErrAddress) {
		t.Errorf("mixed families: %v", err)
	}
}

func TestBuildEcho_RoundTrip(t *testing.T) {
	tests := []struct {
		src, dst netip.Addr
		reply    bool
		proto    uint8
		typ      uint8
	}{
		{cli4.Addr(), srv4.Addr(), false, ProtoICMPv4, ICMPv4EchoRequest},
		{cli4.Addr(), srv4.Addr(), true, ProtoICMPv4, ICMPv4EchoReply},
		{cli6.Addr(), srv6.Addr(), false, ProtoICMPv6, ICMPv6EchoRequest},
		{cli6.Addr(), srv6.Addr(), true, ProtoICMPv6, ICMPv6EchoReply},
	}
	for _, tt := range tests {
		p := mustParse(t, buildEcho(t, EchoHeader{Src: tt.src, Dst: tt.dst, Reply: tt.reply, ID: 0xabcd, Seq: 9}, []byte("ping")))
		m := p.ICMPv4()
		if p.Proto != tt.proto || m.Type() != tt.typ || m.Code() != 0 || m.ID() != 0xabcd || m.Seq() != 9 ||
			string(p.Payload) != "ping" || p.Src != tt.src || p.SrcAddrPort().Port() != 0 {
			t.Errorf("%v reply=%v: proto %d type %d id %#x seq %d payload %q", tt.src, tt.reply,
				p.Proto, m.Type(), m.ID(), m.Seq(), p.Payload)
		}
	}
}

func TestEchoReply_AnswersRequest(t *testing.T) {
	for _, ends := range [][2]netip.Addr{{cli4.Addr(), srv4.Addr()}, {cli6.Addr(), srv6.Addr()}} {
		req := mustParse(t, buildEcho(t, EchoHeader{Src: ends[0], Dst: ends[1], ID: 77, Seq: 3}, []byte("abcdefgh")))
		b := make([]byte, 200)
		n, err := EchoReply(b, req)
		if err != nil {
			t.Fatal(err)
		}
		rep := mustParse(t, b[:n])
		m := rep.ICMPv6() // same accessors as ICMPv4
		wantType := uint8(ICMPv4EchoReply)
		if ends[0].Is6() {
			wantType = ICMPv6EchoReply
		}
		if rep.Src != ends[1] || rep.Dst != ends[0] || m.Type() != wantType || m.ID() != 77 || m.Seq() != 3 ||
			string(rep.Payload) != "abcdefgh" {
			t.Errorf("reply %v->%v type %d id %d seq %d payload %q", rep.Src, rep.Dst, m.Type(), m.ID(), m.Seq(), rep.Payload)
		}
	}
}

func TestEchoReply_InPlaceOverRequestWithIPOptions(t *testing.T) {
	// A request with 8 bytes of IPv4 options; the reply drops them, so it
	// is written 8 bytes further forward over its own request.
	plain := buildEcho(t, EchoHeader{Src: cli4.Addr(), Dst: srv4.Addr(), ID: 5, Seq: 6}, []byte("0123456789"))
	b := make([]byte, 0, 100)
	b = append(b, plain[:20]...)
	b = append(b, 1, 1, 1, 1, 0, 0, 0, 0) // IPv4 options: four NOPs, then end of list
	b = append(b, plain[20:]...)
	IPv4(b).SetVersionHeaderLen(28)
	IPv4(b).SetTotalLen(len(b))
	fixIPv4(b)
	req := mustParse(t, b)

	n, err := EchoReply(b, req)
	if err != nil {
		t.Fatal(err)
	}
	rep := mustParse(t, b[:n])
	if n != len(plain) || rep.Dst != cli4.Addr() || rep.ICMPv4().Type() != ICMPv4EchoReply ||
		rep.ICMPv4().ID() != 5 || rep.ICMPv4().Seq() != 6 || string(rep.Payload) != "0123456789" {
		t.Fatalf("in-place reply: len %d dst %v type %d payload %q", n, rep.Dst, rep.ICMPv4().Type(), rep.Payload)
	}
}

func TestEchoReply_RejectsNonRequests(t *testing.T) {
	reply := mustParse(t, buildEcho(t, EchoHeader{Src: cli4.Addr(), Dst: srv4.Addr(), Reply: true}, nil))
	tcp := mustParse(t, hexBytes(t, synV4))
	coded := mustParse(t, buildEcho(t, EchoHeader{Src: cli6.Addr(), Dst: srv6.Addr()}, nil))
	coded.ICMPv6().SetCode(1)
	b := make([]byte, 100)
	for name, p := range map[string]Packet{"reply": reply, "TCP": tcp, "code 1": coded} {
		if n, err := EchoReply(b, p); !errors.Is(err, ErrUnsupported) || n != 0 {
			t.Errorf("%s: EchoReply = %d, %v", name, n, err)
		}
		if allocs := testing.AllocsPerRun(10, func() { _, _ = EchoReply(b, p) }); allocs != 0 {
			t.Errorf("%s: rejecting allocates %v times", name, allocs)
		}
	}
}

func TestBuilders_DoNotAllocate(t *testing.T) {
	b := make([]byte, 2000)
	payload := make([]byte, 1000)
	opts := &TCPOptions{HasTS: true, NumSACK: 2}
	req := mustParse(t, buildEcho(t, EchoHeader{Src: cli6.Addr(), Dst: srv6.Addr()}, payload[:56]))
	n := testing.AllocsPerRun(100, func() {
		_, _ = BuildTCP(b, TCPHeader{Src: cli6, Dst: srv6, Flags: ACK, Options: opts}, payload)
		_, _ = BuildTCP(b, TCPHeader{Src: cli4, Dst: srv4, Flags: ACK}, payload)
		_, _ = BuildUDP(b, UDPHeader{Src: cli4, Dst: srv4}, payload)
		_, _ = EchoReply(b, req)
	})
	if n != 0 {
		t.Fatalf("builders allocate %v times", n)
	}
}

func BenchmarkBuildTCP(b *testing.B) {
	buf := make([]byte, 1600)
	payload := make([]byte, 1448)
	opts := &TCPOptions{HasTS: true, TSVal: 1, TSEcr: 2}
	h := TCPHeader{Src: cli4, Dst: srv4, Seq: 1, Ack: 2, Flags: ACK | PSH, Window: 512, Options: opts}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildTCP(buf, h, payload); err != nil {
			b.Fatal(err)
		}
	}
}

func TestBuildUDPPortUnreachable_QuotesTheDatagram(t *testing.T) {
	for _, c := range []struct {
		app, dst  netip.AddrPort
		proto     uint8
		typ, code uint8
		limit     int
	}{
		{netip.MustParseAddrPort("198.18.0.1:5000"), netip.MustParseAddrPort("198.19.0.2:53"), ProtoICMPv4, ICMPv4DestUnreach, ICMPv4CodePortUnreach, 576},
		{netip.MustParseAddrPort("[2001:2::1]:5000"), netip.MustParseAddrPort("[2001:2:0:1::2]:53"), ProtoICMPv6, ICMPv6DestUnreach, ICMPv6CodePortUnreach, 1280},
	} {
		payload := bytes.Repeat([]byte("q"), 2000)
		b := make([]byte, 2000)
		n, err := BuildUDPPortUnreachable(b, c.app, c.dst, payload)
		if err != nil {
			t.Fatal(err)
		}
		if n != c.limit {
			t.Errorf("%s: %d bytes, want the %d-byte limit", c.dst, n, c.limit)
		}
		p, err := ParseIP(b[:n])
		if err != nil {
			t.Fatalf("does not parse: %v", err)
		}
		m := ICMPv4(p.Transport)
		if p.Proto != c.proto || p.Src != c.dst.Addr() || p.Dst != c.app.Addr() || m.Type() != c.typ || m.Code() != c.code {
			t.Errorf("%s: %v→%v proto %d type %d code %d", c.dst, p.Src, p.Dst, p.Proto, m.Type(), m.Code())
		}
		ok := m.ComputeChecksum() == m.Checksum()
		if c.proto == ProtoICMPv6 {
			ok = ICMPv6(m).ComputeChecksum(p.Src, p.Dst) == m.Checksum()
		}
		if !ok {
			t.Errorf("%s: bad checksum", c.dst)
		}
		full := make([]byte, 2100)
		fn, err := BuildUDP(full, UDPHeader{Src: c.app, Dst: c.dst}, payload)
		if err != nil {
			t.Fatal(err)
		}
		if quote := m.Payload(); !bytes.Equal(quote, full[:min(fn, len(quote))]) {
			t.Errorf("%s: the quote is not the start of the datagram", c.dst)
		}
	}
}

// A partial checksum is the pseudo-header sum: what the kernel completes
// by summing the TCP header and payload over it. ParseIP refuses such a
// packet and ParseIPTrusted takes it; completing the sum makes it valid.
func TestBuildTCP_PartialChecksumAndParseIPTrusted(t *testing.T) {
	for _, tt := range []struct {
		name     string
		src, dst netip.AddrPort
	}{{"IPv4", cli4, srv4}, {"IPv6", cli6, srv6}} {
		t.Run(tt.name, func(t *testing.T) {
			h := TCPHeader{Src: tt.src, Dst: tt.dst, Seq: 1, Ack: 2, Flags: ACK, Window: 100, PartialChecksum: true}
			b := buildTCP(t, h, bytes.Repeat([]byte("data"), 100))
			if _, err := ParseIP(b); !errors.Is(err, ErrBadChecksum) {
				t.Fatalf("ParseIP of a partial checksum: %v, want ErrBadChecksum", err)
			}
			p, err := ParseIPTrusted(b)
			if err != nil {
				t.Fatalf("ParseIPTrusted: %v", err)
			}
			tcp := p.TCP()
			if want := PseudoHeaderChecksum(ProtoTCP, tt.src.Addr(), tt.dst.Addr(), len(p.Transport)); tcp.Checksum() != want {
				t.Fatalf("checksum field %#x, want the pseudo-header sum %#x", tcp.Checksum(), want)
			}
			// What the kernel does with CHECKSUM_PARTIAL.
			tcp.SetChecksum(0)
			tcp.SetChecksum(^Checksum(p.Transport, PseudoHeaderChecksum(ProtoTCP, tt.src.Addr(), tt.dst.Addr(), len(p.Transport))))
			if _, err := ParseIP(b); err != nil {
				t.Fatalf("completed checksum: %v", err)
			}
			if tt.name == "IPv4" {
				b[10] ^= 1 // the IPv4 header checksum is still checked
				if _, err := ParseIPTrusted(b); !errors.Is(err, ErrBadChecksum) {
					t.Fatalf("ParseIPTrusted with a bad IPv4 header checksum: %v", err)
				}
			}
		})
	}
}
