package tcp

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// isnTick is the period of the ISN clock M (RFC 6528 §3, after RFC 793's
// 4 microsecond clock): M wraps every 4.77 hours.
const isnTick = 4 * time.Microsecond

// isnGenerator chooses initial sequence numbers as RFC 6528 §3 specifies:
//
//	ISN = M + F(localip, localport, remoteip, remoteport, secretkey)
//
// with M a 4 µs timer and F SipHash-2-4 keyed with a 128-bit secret drawn
// from crypto/rand per generator (so per process, and new on restart, as
// RFC 6528 §3 recommends). An off-path attacker who cannot see the key
// cannot predict the ISN of a connection from those of others, while
// successive connections of the same 4-tuple still get increasing ISNs,
// which is what RFC 9293 §3.4.1 and TIME-WAIT reuse rely on.
//
// M is derived from now, so callers should pass readings of one clock,
// which never steps back (a clock.Clock is monotonic); a clock stepped back
// would let a reused 4-tuple's ISN go backwards. A generator
// is read-only after construction and safe for concurrent use.
type isnGenerator struct {
	k0, k1 uint64
}

// newISNGenerator returns a generator with a fresh random key.
func newISNGenerator() (*isnGenerator, error) {
	var key [16]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, fmt.Errorf("tcp: ISN secret: %w", err)
	}
	return newISNGeneratorWithKey(key), nil
}

// newISNGeneratorWithKey returns a generator with the given key, for tests.
func newISNGeneratorWithKey(key [16]byte) *isnGenerator {
	k0, k1 := sipKey(key)
	return &isnGenerator{k0: k0, k1: k1}
}

// isn returns the initial sequence number for a connection from src (the
// peer) to dst (us) at now. It does not allocate.
func (g *isnGenerator) isn(src, dst netip.AddrPort, now clock.Time) Seq {
	var buf [tupleLen]byte
	putTuple(buf[:], src, dst)
	f := sipHash24(g.k0, g.k1, buf[:])
	m := uint32(int64(now) / int64(isnTick))
	return Seq(m + uint32(f))
}

// tupleLen is the encoded size of a 4-tuple: two 16-byte addresses (IPv4
// as IPv4-mapped IPv6) and two ports.
const tupleLen = 16 + 2 + 16 + 2

// putTuple encodes src and dst into b[:tupleLen]. Zones are ignored.
func putTuple(b []byte, src, dst netip.AddrPort) {
	a := src.Addr().As16()
	copy(b[0:16], a[:])
	binary.BigEndian.PutUint16(b[16:], src.Port())
	a = dst.Addr().As16()
	copy(b[18:34], a[:])
	binary.BigEndian.PutUint16(b[34:], dst.Port())
}

// sipKey splits a 128-bit SipHash key into its two little-endian words.
func sipKey(key [16]byte) (k0, k1 uint64) {
	return binary.LittleEndian.Uint64(key[0:8]), binary.LittleEndian.Uint64(key[8:16])
}

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast
// short-input PRF", 2012) of msg under the key (k0, k1): a keyed PRF fast
// on short inputs such as a 4-tuple, which is what RFC 6528's F needs.
func sipHash24(k0, k1 uint64, msg []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	n := len(msg)
	for len(msg) >= 8 {
		m := binary.LittleEndian.Uint64(msg)
		v3 ^= m
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= m
		msg = msg[8:]
	}
	// The last word holds the remaining bytes and the length's low byte.
	m := uint64(n) << 56
	for i, c := range msg {
		m |= uint64(c) << (8 * i)
	}
	v3 ^= m
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= m
	v2 ^= 0xff
	for range 4 {
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	}
	return v0 ^ v1 ^ v2 ^ v3
}

func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}
