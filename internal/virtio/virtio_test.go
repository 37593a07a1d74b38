package virtio

import (
	"errors"
	"testing"
)

func TestHdr_EncodeDecodeRoundTrip(t *testing.T) {
	h := Hdr{Flags: FlagNeedsCsum, GSOType: GSOTCPv6, HdrLen: 74, GSOSize: 1428, CsumStart: 40, CsumOffset: 16}
	var b [HdrLen + 2]byte
	b[HdrLen] = 0xee
	h.Encode(b[:])
	if got := Decode(b[:]); got != h {
		t.Fatalf("round trip: %+v, want %+v", got, h)
	}
	if b[HdrLen] != 0xee {
		t.Fatal("Encode wrote past the header")
	}
	// The layout of struct virtio_net_hdr: flags, gso_type, then four
	// 16-bit fields in the host's order (little-endian here).
	if b[0] != 1 || b[1] != 4 || b[2] != 74 || b[3] != 0 || b[4] != 0x94 || b[5] != 0x05 || b[6] != 40 || b[8] != 16 {
		t.Fatalf("layout % x", b[:HdrLen])
	}
}

func TestHdr_Predicates(t *testing.T) {
	cases := []struct {
		h            Hdr
		gso, trusted bool
	}{
		{Hdr{}, false, false},
		{Hdr{Flags: FlagNeedsCsum}, false, true},
		{Hdr{Flags: FlagDataValid}, false, true},
		{Hdr{GSOType: GSOTCPv4, Flags: FlagNeedsCsum}, true, true},
		{Hdr{GSOType: GSOTCPv4 | GSOECN}, true, false},
	}
	for _, c := range cases {
		if c.h.IsGSO() != c.gso || c.h.ChecksumTrusted() != c.trusted {
			t.Errorf("%+v: IsGSO %v, ChecksumTrusted %v; want %v, %v", c.h, c.h.IsGSO(), c.h.ChecksumTrusted(), c.gso, c.trusted)
		}
	}
}

func TestHdr_CheckInbound(t *testing.T) {
	v4 := make([]byte, 2000)
	v4[0] = 0x45
	v6 := make([]byte, 2000)
	v6[0] = 0x60
	good4 := TCPSuperpacket(false, 20, 32, 1448)
	good6 := TCPSuperpacket(true, 40, 32, 1428)
	cases := []struct {
		name string
		h    Hdr
		pkt  []byte
		ihl  int
		want error
	}{
		{"v4 superpacket", good4, v4, 20, nil},
		{"v6 superpacket", good6, v6, 40, nil},
		{"plain", Hdr{}, v4, 20, nil},
		{"plain, partial checksum", Hdr{Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: 16}, v4, 20, nil},
		{"partial checksum past the end", Hdr{Flags: FlagNeedsCsum, CsumStart: 1990, CsumOffset: 16}, v4, 20, ErrHeader},
		{"v4 type on v6", good4, v6, 40, ErrGSOType},
		{"UDP L4", Hdr{GSOType: GSOUDPL4, Flags: FlagNeedsCsum, GSOSize: 1000, CsumStart: 20, CsumOffset: 6}, v4, 20, ErrGSOType},
		{"ECN", Hdr{GSOType: GSOTCPv4 | GSOECN, Flags: FlagNeedsCsum, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}, v4, 20, ErrGSOType},
		{"no segment size", Hdr{GSOType: GSOTCPv4, Flags: FlagNeedsCsum, CsumStart: 20, CsumOffset: 16}, v4, 20, ErrHeader},
		{"checksum not partial", Hdr{GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}, v4, 20, ErrHeader},
		{"checksum start not the TCP header", Hdr{GSOType: GSOTCPv4, Flags: FlagNeedsCsum, GSOSize: 1448, CsumStart: 24, CsumOffset: 16}, v4, 20, ErrHeader},
		{"empty", good4, nil, 20, ErrHeader},
	}
	for _, c := range cases {
		err := c.h.CheckInbound(c.pkt, c.ihl)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

func TestTCPSuperpacket(t *testing.T) {
	if h := TCPSuperpacket(false, 20, 32, 0); h.IsGSO() || h.Flags != FlagNeedsCsum || h.CsumStart != 20 || h.CsumOffset != 16 {
		t.Errorf("single segment: %+v", h)
	}
	if h := TCPSuperpacket(true, 40, 20, 1440); h.GSOType != GSOTCPv6 || h.GSOSize != 1440 || h.HdrLen != 60 {
		t.Errorf("v6 superpacket: %+v", h)
	}
}
