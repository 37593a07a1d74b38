package tcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

func testCookieJar() *cookieJar {
	var s [32]byte
	for i := range s {
		s[i] = byte(7 * i)
	}
	return newCookieJar(s)
}

// Client ISNs near 2^32 so the arithmetic wraps.
const cookieClientISN Seq = 0xffff_fff0

func TestCookie_RoundTrip(t *testing.T) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	for _, tu := range [][2]netip.AddrPort{{isnCli4, isnSrv4}, {isnCli6, isnSrv6}} {
		for _, isn := range []Seq{0, 1, cookieClientISN, 0x7fffffff} {
			iss, mss := j.make(tu[0], tu[1], isn, 1460, now)
			got, ok := j.check(tu[0], tu[1], isn, iss, now.Add(time.Second))
			if !ok || got != 1460 || mss != 1460 {
				t.Errorf("%v isn %d: check = %d, %v (make said %d), want 1460, true", tu, isn, got, ok, mss)
			}
		}
	}
}

func TestCookie_MSSDecodesToLargestEntryNotAbove(t *testing.T) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	tests := []struct{ client, want uint16 }{
		{0, 536}, {100, 536}, {536, 536}, {1219, 536}, {1220, 1220}, {1299, 1220},
		{1300, 1300}, {1399, 1300}, {1400, 1400}, {1440, 1440}, {1459, 1440},
		{1460, 1460}, {8000, 1460}, {8940, 8940}, {65475, 65475}, {65535, 65475},
	}
	for _, tt := range tests {
		iss, enc := j.make(isnCli4, isnSrv4, cookieClientISN, tt.client, now)
		got, ok := j.check(isnCli4, isnSrv4, cookieClientISN, iss, now)
		if !ok || got != tt.want || enc != tt.want {
			t.Errorf("client MSS %d: decoded %d (ok %v, make %d), want %d", tt.client, got, ok, enc, tt.want)
		}
	}
}

func TestCookie_AnyFlippedBitRejected(t *testing.T) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	iss, _ := j.make(isnCli4, isnSrv4, cookieClientISN, 1460, now)
	for bit := range 32 {
		bad := iss ^ Seq(1)<<bit
		if mss, ok := j.check(isnCli4, isnSrv4, cookieClientISN, bad, now); ok {
			t.Errorf("cookie with bit %d flipped accepted (MSS %d)", bit, mss)
		}
	}
}

func TestCookie_WrongTupleOrClientISNRejected(t *testing.T) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	iss, _ := j.make(isnCli4, isnSrv4, cookieClientISN, 1460, now)
	tests := []struct {
		name     string
		src, dst netip.AddrPort
		isn      Seq
	}{
		{"other source port", netip.AddrPortFrom(isnCli4.Addr(), 40001), isnSrv4, cookieClientISN},
		{"other source address", netip.MustParseAddrPort("198.18.0.9:40000"), isnSrv4, cookieClientISN},
		{"other destination port", isnCli4, netip.AddrPortFrom(isnSrv4.Addr(), 80), cookieClientISN},
		{"swapped direction", isnSrv4, isnCli4, cookieClientISN},
		{"other client ISN", isnCli4, isnSrv4, cookieClientISN + 1},
		{"client ISN off by 2^24", isnCli4, isnSrv4, cookieClientISN.Add(1 << 24)},
	}
	for _, tt := range tests {
		if _, ok := j.check(tt.src, tt.dst, tt.isn, iss, now); ok {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestCookie_ExpiresAfterPreviousSlot(t *testing.T) {
	j := testCookieJar()
	slotStart := clock.Time(15625 * cookieSlot) // a slot boundary
	made := slotStart.Add(10 * time.Second)
	iss, _ := j.make(isnCli4, isnSrv4, cookieClientISN, 1460, made)
	tests := []struct {
		at   clock.Time
		want bool
	}{
		{made, true},
		{slotStart.Add(cookieSlot - 1), true},    // same slot
		{slotStart.Add(cookieSlot), true},        // next slot
		{slotStart.Add(2*cookieSlot - 1), true},  // end of next slot
		{slotStart.Add(2 * cookieSlot), false},   // two slots later
		{slotStart.Add(300 * cookieSlot), false}, // far later
		{slotStart.Add(256 * cookieSlot), false}, // count's top byte wrapped
		{slotStart.Add(-time.Nanosecond), false}, // before it was made
		{slotStart.Add(-cookieSlot), false},
	}
	for _, tt := range tests {
		if _, ok := j.check(isnCli4, isnSrv4, cookieClientISN, iss, tt.at); ok != tt.want {
			t.Errorf("checked %v after slot start: ok = %v, want %v", tt.at.Sub(slotStart), ok, tt.want)
		}
	}
}

func TestCookie_OtherSecretRejects(t *testing.T) {
	now := clock.Time(1_000_000 * time.Second)
	a := testCookieJar()
	b, err := newRandomCookieJar()
	if err != nil {
		t.Fatal(err)
	}
	rejected := 0
	for i := range 100 {
		isn := cookieClientISN + Seq(i*7919)
		iss, _ := a.make(isnCli4, isnSrv4, isn, 1460, now)
		if _, ok := b.check(isnCli4, isnSrv4, isn, iss, now); !ok {
			rejected++
		}
	}
	if rejected != 100 {
		t.Errorf("a jar with another secret accepted %d of 100 cookies", 100-rejected)
	}
}

func TestCookie_ForgedCookiesRarelyPass(t *testing.T) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	// Random guesses pass with probability about 2^-21 * 2 slots / 256; over
	// 2^16 guesses expect almost none.
	accepted := 0
	x := uint32(0x9e3779b9)
	for range 1 << 16 {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		if _, ok := j.check(isnCli4, isnSrv4, cookieClientISN, Seq(x), now); ok {
			accepted++
		}
	}
	if accepted != 0 {
		t.Errorf("%d of 65536 random cookies accepted", accepted)
	}
}

func TestCookieTS_OptionsRoundTrip(t *testing.T) {
	for _, clock := range []uint32{0, 1, 63, 64, 1000, 0xffffffc0, 0xffffffff, 0x12345678} {
		for ws := int8(-1); ws <= 14; ws++ {
			for _, sack := range []bool{false, true} {
				ts := cookieTSVal(clock, ws, sack)
				gotWS, gotSACK := decodeCookieTS(ts)
				if gotWS != ws || gotSACK != sack {
					t.Fatalf("clock %#x ws %d sack %v: decoded ws %d sack %v", clock, ws, sack, gotWS, gotSACK)
				}
				// Never ahead of the clock, and less than 128 behind it.
				if behind := clock - ts; int32(behind) < 0 || behind >= 128 {
					t.Fatalf("clock %#x ws %d sack %v: TSval %#x is %d behind", clock, ws, sack, ts, int32(behind))
				}
			}
		}
	}
}

func TestCookieTS_ScaleAbove14IsClamped(t *testing.T) {
	ws, _ := decodeCookieTS(cookieTSVal(1000, 15, false))
	if ws != 14 {
		t.Errorf("wscale 15 decoded as %d, want 14 (RFC 7323 §2.3)", ws)
	}
}

func TestCookie_DoesNotAllocate(t *testing.T) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	var ok bool
	allocs := testing.AllocsPerRun(100, func() {
		iss, _ := j.make(isnCli6, isnSrv6, cookieClientISN, 1440, now)
		_, ok = j.check(isnCli6, isnSrv6, cookieClientISN, iss, now)
	})
	if allocs != 0 || !ok {
		t.Errorf("make+check: %v allocs, ok %v", allocs, ok)
	}
}

func BenchmarkCookieMake(b *testing.B) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	var sink Seq
	b.ReportAllocs()
	for b.Loop() {
		iss, _ := j.make(isnCli4, isnSrv4, cookieClientISN, 1460, now)
		sink += iss
	}
	_ = sink
}

func BenchmarkCookieCheck(b *testing.B) {
	j := testCookieJar()
	now := clock.Time(1_000_000 * time.Second)
	iss, _ := j.make(isnCli4, isnSrv4, cookieClientISN, 1460, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := j.check(isnCli4, isnSrv4, cookieClientISN, iss, now); !ok {
			b.Fatal("rejected")
		}
	}
}
