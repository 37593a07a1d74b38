package packet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestParseTCPOptions(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    TCPOptions
		wantErr error
	}{
		{name: "empty", in: ""},
		{
			name: "Linux SYN: MSS, SACK-permitted+TS, NOP, WScale",
			in:   "020405b4 0402080a 000a1b2c 00000000 01030307",
			want: TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 0xa1b2c, HasTS: true, WScale: 7, HasWScale: true},
		},
		{
			name: "data segment: NOP NOP TS, NOP NOP SACK with two blocks",
			in:   "0101080a 00000001 00000002 01010512 00000010 00000020 00000030 00000040",
			want: TCPOptions{
				TSVal: 1, TSEcr: 2, HasTS: true,
				SACKBlocks: [4]SACKBlock{{0x10, 0x20}, {0x30, 0x40}}, NumSACK: 2,
			},
		},
		{name: "EOL stops parsing", in: "00020405 b4000000", want: TCPOptions{}},
		{name: "trailing EOL padding", in: "01030302 00000000", want: TCPOptions{WScale: 2, HasWScale: true}},
		{name: "unknown kind skipped by length", in: "fe06abcd ef010204 05dc", want: TCPOptions{MSS: 1500, HasMSS: true}},
		{name: "MSS with wrong length ignored", in: "02050102 03", want: TCPOptions{}},
		{name: "WScale above 14 reported as received", in: "01030320", want: TCPOptions{WScale: 32, HasWScale: true}},
		{name: "SACK with partial block ignored", in: "0506 00000001", want: TCPOptions{}},
		{
			name: "repeated option: last wins",
			in:   "02040100 02040200",
			want: TCPOptions{MSS: 0x200, HasMSS: true},
		},
		{
			name: "five SACK blocks keep the first four",
			in: "052a" + "00000001 00000002 00000003 00000004 00000005 00000006" +
				"00000007 00000008 00000009 0000000a",
			want: TCPOptions{SACKBlocks: [4]SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}, NumSACK: 4},
		},
		{
			name: "zero length is an error, earlier options kept", in: "02040578 fe00",
			want: TCPOptions{MSS: 1400, HasMSS: true}, wantErr: errOptShortLen,
		},
		{name: "length 1 is an error", in: "0301", wantErr: errOptShortLen},
		{name: "kind without length byte", in: "010102", wantErr: errOptNoLength},
		{name: "length past the end", in: "080a0000 0001", wantErr: errOptOverrun},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTCPOptions(hexBytes(t, tt.in))
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBadOptions) {
				t.Errorf("err %v does not match ErrBadOptions", err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestPutTCPOptions_LinuxLayout(t *testing.T) {
	tests := []struct {
		name string
		o    TCPOptions
		want string
	}{
		{name: "none", o: TCPOptions{}, want: ""},
		{
			name: "SYN with everything",
			o:    TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, TSVal: 0xa1b2c, HasTS: true, WScale: 7, HasWScale: true},
			want: "020405b4 0402080a 000a1b2c 00000000 01030307",
		},
		{
			name: "SYN without timestamps",
			o:    TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, WScale: 7, HasWScale: true},
			want: "020405b4 01010402 01030307",
		},
		{
			name: "timestamps alone",
			o:    TCPOptions{TSVal: 5, TSEcr: 6, HasTS: true},
			want: "0101080a 00000005 00000006",
		},
		{
			name: "timestamps and three SACK blocks fill 40 bytes",
			o: TCPOptions{TSVal: 5, TSEcr: 6, HasTS: true,
				SACKBlocks: [4]SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}, NumSACK: 4},
			want: "0101080a 00000005 00000006 0101051a 00000001 00000002 00000003 00000004 00000005 00000006",
		},
		{
			name: "SACK blocks beyond 40 bytes are dropped, the first kept",
			o: TCPOptions{MSS: 1, HasMSS: true, HasTS: true, SACKPermitted: true, HasWScale: true,
				SACKBlocks: [4]SACKBlock{{1, 2}, {3, 4}, {5, 6}}, NumSACK: 3},
			want: "02040001 0402080a 00000000 00000000 01030300 01010512 00000001 00000002 00000003 00000004",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := hexBytes(t, tt.want)
			if n := TCPOptionsLen(&tt.o); n != len(want) {
				t.Fatalf("TCPOptionsLen = %d, want %d", n, len(want))
			}
			b := make([]byte, TCPMaxOptionsLen)
			n := PutTCPOptions(b, &tt.o)
			if !bytes.Equal(b[:n], want) {
				t.Fatalf("wrote % x\nwant  % x", b[:n], want)
			}
			if got := AppendTCPOptions([]byte{0xee}, &tt.o); !bytes.Equal(got[1:], want) || got[0] != 0xee {
				t.Errorf("AppendTCPOptions = % x", got)
			}
		})
	}
}

func TestPutTCPOptions_NegativeOrHugeNumSACKIsClamped(t *testing.T) {
	for _, n := range []int{-1, 99} {
		o := TCPOptions{NumSACK: n}
		if l := TCPOptionsLen(&o); l%4 != 0 || l > TCPMaxOptionsLen {
			t.Errorf("NumSACK %d: length %d", n, l)
		}
		PutTCPOptions(make([]byte, TCPMaxOptionsLen), &o) // must not panic
	}
}

func TestTCPOptions_ParseAndPutDoNotAllocate(t *testing.T) {
	raw := hexBytes(t, "020405b4 0402080a 000a1b2c 00000000 01030307")
	o := TCPOptions{HasTS: true, NumSACK: 3}
	b := make([]byte, TCPMaxOptionsLen)
	n := testing.AllocsPerRun(100, func() {
		got, _ := ParseTCPOptions(raw)
		PutTCPOptions(b, &got)
		PutTCPOptions(b, &o)
	})
	if n != 0 {
		t.Fatalf("allocates %v times", n)
	}
}

// optionsFrom derives an option set from fuzzer inputs.
func optionsFrom(present uint8, mss uint16, ws uint8, tsval, tsecr uint32, sacks []byte) TCPOptions {
	o := TCPOptions{
		HasMSS: present&1 != 0, HasWScale: present&2 != 0, SACKPermitted: present&4 != 0, HasTS: present&8 != 0,
	}
	if o.HasMSS {
		o.MSS = mss
	}
	if o.HasWScale {
		o.WScale = ws
	}
	if o.HasTS {
		o.TSVal, o.TSEcr = tsval, tsecr
	}
	for len(sacks) >= 8 && o.NumSACK < MaxSACKBlocks {
		o.SACKBlocks[o.NumSACK] = SACKBlock{binary.BigEndian.Uint32(sacks), binary.BigEndian.Uint32(sacks[4:])}
		o.NumSACK++
		sacks = sacks[8:]
	}
	return o
}

func FuzzTCPOptions(f *testing.F) {
	f.Add(hexBytes(f, "020405b4 0402080a 000a1b2c 00000000 01030307"), uint8(15), uint16(1460), uint8(7), uint32(1), uint32(2), []byte{})
	f.Add(hexBytes(f, "0101080a 00000001 00000002 01010512 00000010 00000020 00000030 00000040"), uint8(8), uint16(0), uint8(0), uint32(1), uint32(0), make([]byte, 32))
	f.Add(hexBytes(f, "fe00"), uint8(0), uint16(0), uint8(0), uint32(0), uint32(0), make([]byte, 9))
	f.Add([]byte{5, 255}, uint8(1), uint16(536), uint8(14), uint32(0), uint32(0), make([]byte, 16))
	f.Fuzz(func(t *testing.T, raw []byte, present uint8, mss uint16, ws uint8, tsval, tsecr uint32, sacks []byte) {
		// Arbitrary bytes: no panic; what was decoded encodes to a valid
		// block that decodes to the same, SACK blocks cut to what fits.
		got, err := ParseTCPOptions(raw)
		if err != nil && !errors.Is(err, ErrBadOptions) {
			t.Fatalf("error %v is not ErrBadOptions", err)
		}
		checkRoundTrip(t, got)

		// A constructed option set survives write then parse.
		checkRoundTrip(t, optionsFrom(present, mss, ws, tsval, tsecr, sacks))
	})
}

func checkRoundTrip(t *testing.T, o TCPOptions) {
	t.Helper()
	b := make([]byte, TCPMaxOptionsLen)
	n := PutTCPOptions(b, &o)
	if n != TCPOptionsLen(&o) || n%4 != 0 || n > TCPMaxOptionsLen {
		t.Fatalf("wrote %d bytes, TCPOptionsLen %d", n, TCPOptionsLen(&o))
	}
	back, err := ParseTCPOptions(b[:n])
	if err != nil {
		t.Fatalf("parse of written options % x: %v", b[:n], err)
	}
	_, fit := o.layout()
	want := o
	want.NumSACK = fit
	want.SACKBlocks = [MaxSACKBlocks]SACKBlock{}
	copy(want.SACKBlocks[:], o.SACKBlocks[:fit])
	if back != want {
		t.Fatalf("round trip of %+v\ngave %+v\nwant %+v", o, back, want)
	}
}
