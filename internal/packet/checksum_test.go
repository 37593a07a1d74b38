package packet

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// refSum is RFC 1071 written the slow, obvious way: big-endian 16-bit
// words, a zero pad after an odd last byte, end-around carry at each step.
func refSum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestChecksum_MatchesReferenceOnRandomLengths(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70000)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for range 3000 {
		n := rng.IntN(2100)
		if rng.IntN(10) == 0 {
			n = rng.IntN(len(buf) + 1)
		}
		off := rng.IntN(16) // unaligned starts too
		b := buf[off : off+min(n, len(buf)-off)]
		initial := uint16(rng.Uint32())
		if got, want := Checksum(b, initial), refSum(b, initial); got != want {
			t.Fatalf("len %d off %d initial %#x: Checksum %#04x, reference %#04x", len(b), off, initial, got, want)
		}
	}
}

func TestChecksum_AllOnesNeverOverflows(t *testing.T) {
	for _, n := range []int{0, 1, 2, 7, 8, 31, 32, 33, 1500, 65535, 65536} {
		b := make([]byte, n)
		for i := range b {
			b[i] = 0xff
		}
		if got, want := Checksum(b, 0xffff), refSum(b, 0xffff); got != want {
			t.Errorf("len %d: Checksum %#04x, reference %#04x", n, got, want)
		}
	}
}

func TestChecksum_RFC1071Example(t *testing.T) {
	// RFC 1071 §3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Checksum(b, 0); got != 0xddf2 {
		t.Fatalf("Checksum = %#04x, want 0xddf2", got)
	}
}

func TestChecksum_PiecesOfEvenLengthCompose(t *testing.T) {
	b := []byte("the quick brown fox jumps over the lazy dog!")
	whole := Checksum(b, 0)
	for cut := 0; cut <= len(b); cut += 2 {
		if got := Checksum(b[cut:], Checksum(b[:cut], 0)); got != whole {
			t.Errorf("cut at %d: %#04x, whole %#04x", cut, got, whole)
		}
	}
}

func TestPseudoHeaderChecksum_MatchesSerializedPseudoHeader(t *testing.T) {
	v4s, v4d := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.19.255.254")
	ph4 := append(append(v4s.AsSlice(), v4d.AsSlice()...), 0, ProtoUDP, 0x12, 0x34)
	if got, want := PseudoHeaderChecksum(ProtoUDP, v4s, v4d, 0x1234), refSum(ph4, 0); got != want {
		t.Errorf("IPv4: %#04x, want %#04x", got, want)
	}

	v6s, v6d := netip.MustParseAddr("2001:2::ffff:1"), netip.MustParseAddr("2001:2:0:ffff::2")
	ph6 := append(v6s.AsSlice(), v6d.AsSlice()...)
	ph6 = binary.BigEndian.AppendUint32(ph6, 0x1_0004) // lengths above 16 bits count
	ph6 = append(ph6, 0, 0, 0, ProtoICMPv6)
	if got, want := PseudoHeaderChecksum(ProtoICMPv6, v6s, v6d, 0x1_0004), refSum(ph6, 0); got != want {
		t.Errorf("IPv6: %#04x, want %#04x", got, want)
	}
}

func TestUpdateChecksum_AgreesWithFullRecompute(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, 40)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		check := ^Checksum(b, 0)
		at := 2 * rng.IntN(18)
		old := binary.BigEndian.Uint32(b[at:])
		neu := rng.Uint32()
		if rng.IntN(4) == 0 {
			neu = old ^ 0xffff // exercises the one's complement zero cases
		}
		binary.BigEndian.PutUint32(b[at:], neu)
		check = UpdateChecksum32(check, old, neu)
		// Valid when the sum with the checksum added is all ones.
		if got := Checksum(b, check); got != 0xffff {
			t.Fatalf("offset %d %#x->%#x: updated checksum %#04x does not verify (sum %#04x)", at, old, neu, check, got)
		}
	}
}

func TestChecksum_DoesNotAllocate(t *testing.T) {
	b := make([]byte, 1500)
	if n := testing.AllocsPerRun(100, func() { Checksum(b, 0) }); n != 0 {
		t.Fatalf("Checksum allocates %v times", n)
	}
}

func benchmarkChecksum(b *testing.B, n int) {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	var s uint16
	for b.Loop() {
		s = Checksum(buf, s)
	}
}

func BenchmarkChecksum1500(b *testing.B) { benchmarkChecksum(b, 1500) }
func BenchmarkChecksum64K(b *testing.B)  { benchmarkChecksum(b, 65535) }
func BenchmarkChecksum64(b *testing.B)   { benchmarkChecksum(b, 64) }
