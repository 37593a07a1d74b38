package tcp

import (
	"math/bits"
	"net/netip"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

func TestSipHash24_MatchesReferenceVectors(t *testing.T) {
	var key [16]byte
	msg := make([]byte, 64)
	for i := range key {
		key[i] = byte(i)
	}
	for i := range msg {
		msg[i] = byte(i)
	}
	k0, k1 := sipKey(key)
	// Key 00..0f, message 00..len-1: the SipHash paper's appendix A
	// example (15 bytes) and the reference implementation's vectors.
	tests := []struct {
		n    int
		want uint64
	}{
		{0, 0x726fdb47dd0e0e31},
		{1, 0x74f839c593dc67fd},
		{2, 0x0d6c8009d9a94f5a},
		{3, 0x85676696d7fb7e2d},
		{4, 0xcf2794e0277187b7},
		{8, 0x93f5f5799a932462},
		{15, 0xa129ca6149be45e5},
	}
	for _, tt := range tests {
		if got := sipHash24(k0, k1, msg[:tt.n]); got != tt.want {
			t.Errorf("len %d: got %#x, want %#x", tt.n, got, tt.want)
		}
	}
	if got := sipHash24(0, 0, []byte("Hello world")); got != 0xc9e8a3021f3822d9 {
		t.Errorf("zero key, %q: got %#x", "Hello world", got)
	}
}

var (
	isnCli4 = netip.MustParseAddrPort("198.18.0.1:40000")
	isnSrv4 = netip.MustParseAddrPort("198.19.0.2:443")
	isnCli6 = netip.MustParseAddrPort("[2001:2::1]:40000")
	isnSrv6 = netip.MustParseAddrPort("[2001:2::2]:443")
)

func testISNKey(b byte) [16]byte {
	var k [16]byte
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func TestISN_DiffersPerFourTuple(t *testing.T) {
	g := newISNGeneratorWithKey(testISNKey(1))
	now := clock.Time(1000 * time.Second)
	tuples := [][2]netip.AddrPort{
		{isnCli4, isnSrv4},
		{isnSrv4, isnCli4}, // reversed direction
		{netip.AddrPortFrom(isnCli4.Addr(), 40001), isnSrv4},
		{isnCli4, netip.AddrPortFrom(isnSrv4.Addr(), 444)},
		{netip.MustParseAddrPort("198.18.0.3:40000"), isnSrv4},
		{isnCli6, isnSrv6},
		{netip.AddrPortFrom(isnCli6.Addr(), 40001), isnSrv6},
	}
	seen := map[Seq]int{}
	for i, tu := range tuples {
		s := g.isn(tu[0], tu[1], now)
		if j, dup := seen[s]; dup {
			t.Errorf("tuples %d and %d share ISN %d", j, i, s)
		}
		seen[s] = i
	}
}

func TestISN_AdvancesWithFourMicrosecondClock(t *testing.T) {
	g := newISNGeneratorWithKey(testISNKey(1))
	t0 := clock.Time(5000 * time.Second)
	base := g.isn(isnCli4, isnSrv4, t0)
	tests := []struct {
		after time.Duration
		want  uint32
	}{
		{0, 0},
		{3 * time.Microsecond, 0},
		{4 * time.Microsecond, 1},
		{time.Millisecond, 250},
		{time.Second, 250000},
		{time.Minute, 15000000},
	}
	for _, tt := range tests {
		got := g.isn(isnCli4, isnSrv4, t0.Add(tt.after))
		if uint32(got-base) != tt.want {
			t.Errorf("after %v: ISN advanced by %d, want %d", tt.after, uint32(got-base), tt.want)
		}
	}
	// Successive connections of one tuple get increasing ISNs (within
	// half the sequence space: 2.38 hours).
	prev := base
	for d := time.Second; d < 2*time.Hour; d += 17 * time.Minute {
		s := g.isn(isnCli4, isnSrv4, t0.Add(d))
		if !s.GreaterThan(prev) {
			t.Fatalf("after %v: ISN %d not after %d", d, s, prev)
		}
		prev = s
	}
}

func TestISN_UnpredictableAcrossKeys(t *testing.T) {
	now := clock.Time(1000 * time.Second)
	a := newISNGeneratorWithKey(testISNKey(1))
	b := newISNGeneratorWithKey(testISNKey(2))
	// Across generators, ISNs of the same tuples differ by unrelated
	// amounts: count how many bits of a^b flip on average (about 16 of
	// 32 for independent values).
	total := 0
	const n = 200
	for i := range n {
		src := netip.AddrPortFrom(isnCli4.Addr(), uint16(10000+i))
		x := a.isn(src, isnSrv4, now) ^ b.isn(src, isnSrv4, now)
		total += bits.OnesCount32(uint32(x))
	}
	if avg := float64(total) / n; avg < 14 || avg > 18 {
		t.Errorf("different keys: average differing bits %.1f, want about 16", avg)
	}
}

func TestISN_RandomGeneratorsDiffer(t *testing.T) {
	a, err := newISNGenerator()
	if err != nil {
		t.Fatal(err)
	}
	b, err := newISNGenerator()
	if err != nil {
		t.Fatal(err)
	}
	if a.k0 == b.k0 && a.k1 == b.k1 {
		t.Fatal("two generators drew the same key")
	}
}

func TestISN_DoesNotAllocate(t *testing.T) {
	g := newISNGeneratorWithKey(testISNKey(1))
	now := clock.Time(1000 * time.Second)
	var sink Seq
	allocs := testing.AllocsPerRun(100, func() { sink += g.isn(isnCli6, isnSrv6, now) })
	if allocs != 0 {
		t.Errorf("isn allocates %v times per call", allocs)
	}
}

func BenchmarkISN(b *testing.B) {
	g := newISNGeneratorWithKey(testISNKey(1))
	now := clock.Time(1000 * time.Second)
	var sink Seq
	b.ReportAllocs()
	for b.Loop() {
		sink += g.isn(isnCli4, isnSrv4, now)
	}
	_ = sink
}
