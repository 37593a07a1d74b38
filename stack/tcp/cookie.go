package tcp

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// SYN cookie layout (RFC 4987 §3.6). Our ISS for a cookie SYN-ACK is
//
//	H1(4-tuple) + clientISN + (count<<24 | mssIndex<<21 | H2(4-tuple, clientISN, count, mssIndex) mod 2^21)
//
// where count is a coarse clock of cookieSlot ticks (its low 8 bits travel
// in the top byte) and H1, H2 are SipHash-2-4 under independent keys. The
// returning ACK gives back clientISN+1 and ISS+1; subtracting H1 and the
// client ISN exposes count and the MSS index, and the low 21 bits must
// equal H2 over them, so a forger succeeds with probability 2^-21 per try
// and changing any bit of a valid cookie (to pick another MSS, say) fails
// the same way. H1 hides the top byte, so an attacker cannot aim at a
// chosen count. The structure follows Linux (net/ipv4/syncookies.c) with
// SipHash, and with the MSS index inside the hash rather than added to it.
const (
	// cookieSlot is the period of the cookie clock.
	cookieSlot = 64 * time.Second
	// cookieMaxAge is how many slots before the current one a cookie
	// stays valid: the ACK must come back within 64-128 s of the SYN-ACK,
	// which is ample for one round trip and short enough to limit replay.
	cookieMaxAge   = 1
	cookieCountPos = 24
	cookieMSSPos   = 21
	cookieHashMask = 1<<cookieMSSPos - 1
)

// cookieMSSTable is the MSS values a cookie can carry, ascending. A cookie
// encodes the largest entry not above the client's MSS. Covered: the
// IPv4 minimum 536 (RFC 9293 §3.7.1), the IPv6 minimum 1220 (1280 - 60),
// common tunnel and Ethernet sizes, jumbo frames and 64 KiB TUN MTUs.
// A function rather than a variable: package state stays immutable.
func cookieMSSTable() [8]uint16 {
	return [8]uint16{536, 1220, 1300, 1400, 1440, 1460, 8940, 65475}
}

// cookieMSSIndex is the index of the largest table entry <= mss, or 0 when
// mss is below every entry (RFC 9293 requires every host to accept 536).
func cookieMSSIndex(mss uint16) uint32 {
	t := cookieMSSTable()
	for i := len(t) - 1; i > 0; i-- {
		if t[i] <= mss {
			return uint32(i)
		}
	}
	return 0
}

// cookieJar makes and checks SYN cookies. It is read-only after
// construction and safe for concurrent use.
type cookieJar struct {
	k0, k1 uint64 // H1 key
	k2, k3 uint64 // H2 key
}

// newCookieJar returns a jar keyed by secret: two independent 128-bit
// SipHash keys.
func newCookieJar(secret [32]byte) *cookieJar {
	var a, b [16]byte
	copy(a[:], secret[:16])
	copy(b[:], secret[16:])
	j := &cookieJar{}
	j.k0, j.k1 = sipKey(a)
	j.k2, j.k3 = sipKey(b)
	return j
}

// newRandomCookieJar returns a jar with a secret from crypto/rand.
func newRandomCookieJar() (*cookieJar, error) {
	var secret [32]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, fmt.Errorf("tcp: SYN cookie secret: %w", err)
	}
	return newCookieJar(secret), nil
}

// cookieCount is the cookie clock at now.
func cookieCount(now clock.Time) uint32 {
	return uint32(int64(now) / int64(cookieSlot))
}

func (j *cookieJar) h1(src, dst netip.AddrPort) uint32 {
	var buf [tupleLen]byte
	putTuple(buf[:], src, dst)
	return uint32(sipHash24(j.k0, j.k1, buf[:]))
}

func (j *cookieJar) h2(src, dst netip.AddrPort, clientISN Seq, count, mssIndex uint32) uint32 {
	var buf [tupleLen + 9]byte
	putTuple(buf[:], src, dst)
	binary.BigEndian.PutUint32(buf[tupleLen:], uint32(clientISN))
	binary.BigEndian.PutUint32(buf[tupleLen+4:], count)
	buf[tupleLen+8] = byte(mssIndex)
	return uint32(sipHash24(j.k2, j.k3, buf[:])) & cookieHashMask
}

// make returns the ISS for a SYN-ACK answering a SYN from src to dst with
// sequence number clientISN and MSS option mss (pass the RFC 9293 §3.7.1
// default when the SYN had none), and the MSS value the cookie encodes,
// which is what check will return and what the connection must use. It
// does not allocate.
func (j *cookieJar) make(src, dst netip.AddrPort, clientISN Seq, mss uint16, now clock.Time) (iss Seq, encodedMSS uint16) {
	idx := cookieMSSIndex(mss)
	count := cookieCount(now)
	low := count<<cookieCountPos | idx<<cookieMSSPos | j.h2(src, dst, clientISN, count, idx)
	return Seq(j.h1(src, dst) + uint32(clientISN) + low), cookieMSSTable()[idx]
}

// check validates a cookie returned in an ACK from src to dst: clientISN
// is SEG.SEQ-1 and cookie is SEG.ACK-1 of that ACK. It returns the MSS the
// cookie encodes, and ok false for a forged, mangled or expired cookie. It
// does not allocate.
func (j *cookieJar) check(src, dst netip.AddrPort, clientISN, cookie Seq, now clock.Time) (mss uint16, ok bool) {
	v := uint32(cookie) - j.h1(src, dst) - uint32(clientISN)
	cur := cookieCount(now)
	age := (cur - v>>cookieCountPos) & 0xff
	if age > cookieMaxAge {
		return 0, false
	}
	idx := v >> cookieMSSPos & 7
	if v&cookieHashMask != j.h2(src, dst, clientISN, cur-age, idx) {
		return 0, false
	}
	return cookieMSSTable()[idx], true
}

// Timestamp encoding of the SYN options a cookie cannot hold (as Linux
// does): when the client sent a timestamp, the SYN-ACK's TSval carries
// window scale and SACK-permitted in its low 6 bits, and the client echoes
// it back in TSecr of the ACK (RFC 7323 §4.3).
const (
	cookieTSBits    = 6
	cookieTSMask    = 1<<cookieTSBits - 1
	cookieTSNoScale = 0xf    // low 4 bits: shift 0-14, or 0xf for none
	cookieTSSACK    = 1 << 4 // bit 4: SACK permitted; bit 5 unused
)

// cookieTSVal returns the TSval to put in a cookie SYN-ACK given our
// timestamp clock now, the client's window scale (-1 when it sent none)
// and whether it offered SACK. The result is never above now, so later
// TSvals from the same clock still increase (RFC 7323 §5.4).
func cookieTSVal(now uint32, wscale int8, sackOK bool) uint32 {
	opts := uint32(cookieTSNoScale)
	if wscale >= 0 {
		opts = uint32(min(wscale, 14)) // RFC 7323 §2.3: at most 14
	}
	if sackOK {
		opts |= cookieTSSACK
	}
	ts := now&^cookieTSMask | opts
	if int32(ts-now) > 0 {
		ts -= 1 << cookieTSBits
	}
	return ts
}

// decodeCookieTS recovers what cookieTSVal encoded from the TSecr of the
// client's ACK: the window scale (-1 for none) and SACK-permitted.
func decodeCookieTS(tsecr uint32) (wscale int8, sackOK bool) {
	w := tsecr & cookieTSNoScale
	wscale = -1
	if w != cookieTSNoScale {
		wscale = int8(min(w, 14))
	}
	return wscale, tsecr&cookieTSSACK != 0
}
