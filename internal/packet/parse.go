package packet

import (
	"encoding/binary"
	"net/netip"
)

// Packet is an IP packet validated by ParseIP. Its slices alias the buffer
// given to ParseIP; everything else in it is a plain value, so it can be
// passed and copied by value without allocating.
type Packet struct {
	Version uint8 // 4 or 6
	Proto   uint8 // ProtoTCP, ProtoUDP, ProtoICMPv4 (IPv4) or ProtoICMPv6 (IPv6)

	Src, Dst netip.Addr // as in the IP header; IPv4 packets give IPv4 addresses

	// IP is the whole packet, trimmed to the length its header declares.
	IP []byte
	// Transport is the transport header and payload. For UDP it ends
	// where the UDP length says, which may be before the end of IP.
	Transport []byte
	// Payload is the transport payload: TCP data, UDP data, or the ICMP
	// message after its 8-byte header (the echo data).
	Payload []byte

	// sumTrusted skips the transport checksum (ParseIPTrusted).
	sumTrusted bool
}

// IPv4 returns the IP header view; valid when Version is 4.
func (p Packet) IPv4() IPv4 { return IPv4(p.IP) }

// IPv6 returns the IP header view; valid when Version is 6.
func (p Packet) IPv6() IPv6 { return IPv6(p.IP) }

// TCP returns the transport view; valid when Proto is ProtoTCP.
func (p Packet) TCP() TCP { return TCP(p.Transport) }

// UDP returns the transport view; valid when Proto is ProtoUDP.
func (p Packet) UDP() UDP { return UDP(p.Transport) }

// ICMPv4 returns the transport view; valid when Proto is ProtoICMPv4.
func (p Packet) ICMPv4() ICMPv4 { return ICMPv4(p.Transport) }

// ICMPv6 returns the transport view; valid when Proto is ProtoICMPv6.
func (p Packet) ICMPv6() ICMPv6 { return ICMPv6(p.Transport) }

// SrcAddrPort returns the source address with the TCP or UDP source port,
// or with port 0 for ICMP.
func (p Packet) SrcAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Src, p.port(0)) }

// DstAddrPort returns the destination address with the TCP or UDP
// destination port, or with port 0 for ICMP.
func (p Packet) DstAddrPort() netip.AddrPort { return netip.AddrPortFrom(p.Dst, p.port(2)) }

func (p Packet) port(at int) uint16 {
	if p.Proto != ProtoTCP && p.Proto != ProtoUDP {
		return 0
	}
	return binary.BigEndian.Uint16(p.Transport[at:])
}

// Specific defects ParseIP reports, each matching one or two categories.
var (
	errEmpty          = newError("packet: empty packet", ErrTruncated)
	errVersion        = newError("packet: IP version is neither 4 nor 6", ErrBadHeader)
	errIPv4Short      = newError("packet: shorter than an IPv4 header", ErrTruncated)
	errIPv4IHL        = newError("packet: IPv4 header length below 20", ErrBadHeader)
	errIPv4HeaderPast = newError("packet: IPv4 header length exceeds the packet", ErrTruncated)
	errIPv4TotalLen   = newError("packet: IPv4 total length below header length", ErrBadHeader)
	errIPv4TotalPast  = newError("packet: IPv4 total length exceeds the packet", ErrTruncated)
	errIPv4Checksum   = newError("packet: bad IPv4 header checksum", ErrBadChecksum)
	errIPv4Fragment   = newError("packet: IPv4 fragment", ErrFragment)
	errIPv4Proto      = newError("packet: unsupported IPv4 protocol", ErrUnsupported)
	errIPv6Short      = newError("packet: shorter than an IPv6 header", ErrTruncated)
	errIPv6PayloadLen = newError("packet: IPv6 payload length exceeds the packet", ErrTruncated)
	errIPv6HopByHop   = newError("packet: IPv6 hop-by-hop header not first", ErrBadHeader)
	errIPv6ExtPast    = newError("packet: IPv6 extension header exceeds the packet", ErrTruncated)
	errIPv6Routing    = newError("packet: IPv6 routing header with segments left", ErrUnsupported)
	errIPv6Fragment   = newError("packet: IPv6 fragment header", ErrFragment, ErrUnsupported)
	errIPv6NoNext     = newError("packet: IPv6 packet without upper-layer header", ErrUnsupported)
	errIPv6Proto      = newError("packet: unsupported IPv6 next header", ErrUnsupported)
	errTCPShort       = newError("packet: shorter than a TCP header", ErrTruncated)
	errTCPDataOffset  = newError("packet: TCP data offset below 5", ErrBadHeader)
	errTCPOffsetPast  = newError("packet: TCP data offset exceeds the segment", ErrTruncated)
	errTCPChecksum    = newError("packet: bad TCP checksum", ErrBadChecksum)
	errUDPShort       = newError("packet: shorter than a UDP header", ErrTruncated)
	errUDPLength      = newError("packet: UDP length below 8", ErrBadHeader)
	errUDPLengthPast  = newError("packet: UDP length exceeds the packet", ErrTruncated)
	errUDPChecksum    = newError("packet: bad UDP checksum", ErrBadChecksum)
	errUDPv6NoSum     = newError("packet: UDP over IPv6 without checksum", ErrBadChecksum)
	errICMPShort      = newError("packet: shorter than an ICMP header", ErrTruncated)
	errICMPChecksum   = newError("packet: bad ICMP checksum", ErrBadChecksum)
)

// ParseIP validates the IP packet at the start of b once, at ingress, and
// returns views into it. It checks, in order:
//
//   - IPv4 (RFC 791): header length, total length against b (bytes after
//     the total length, such as link padding, are trimmed), header
//     checksum, and that the packet is not a fragment (MF or offset set);
//   - IPv6 (RFC 8200): payload length against b (trimmed likewise), then
//     it walks hop-by-hop (first only), routing (only with no segments
//     left) and destination options headers to the transport header,
//     without interpreting their options; a fragment header is reported
//     as a fragment;
//   - TCP (RFC 9293 §3.1): data offset of at least 5 words within the
//     segment and the checksum over the pseudo-header;
//   - UDP (RFC 768): length field of at least 8 within the packet and the
//     checksum, which may be 0 (absent) over IPv4 only (RFC 8200 §8.1);
//   - ICMPv4 (RFC 792) and ICMPv6 (RFC 4443): an 8-byte header and the
//     checksum, over the IPv6 pseudo-header for ICMPv6.
//
// Other transport protocols, and ICMP of the other IP version, are
// ErrUnsupported. TCP options are not parsed here; see ParseTCPOptions.
//
// On failure it returns the zero Packet and an error matching one of the
// category errors (ErrTruncated, ErrBadHeader, ErrBadChecksum, ErrFragment,
// ErrUnsupported) whose text names the defect. It never allocates, and the
// returned slices alias b.
func ParseIP(b []byte) (Packet, error) { return parseIP(b, false) }

// ParseIPTrusted is ParseIP without the TCP, UDP and ICMP checksum check,
// for a packet whose transport checksum the kernel marked as verified
// already or as never computed (virtio-net DATA_VALID or NEEDS_CSUM: a
// packet that did not leave this machine, its checksum field holding only
// the pseudo-header sum). Everything else, the IPv4 header checksum
// included, is checked as ParseIP does.
func ParseIPTrusted(b []byte) (Packet, error) { return parseIP(b, true) }

func parseIP(b []byte, trusted bool) (Packet, error) {
	if len(b) == 0 {
		return Packet{}, errEmpty
	}
	p := Packet{sumTrusted: trusted}
	var err error
	switch b[0] >> 4 {
	case 4:
		err = p.parseIPv4(b)
	case 6:
		err = p.parseIPv6(b)
	default:
		err = errVersion
	}
	if err != nil {
		return Packet{}, err
	}
	return p, nil
}

func (p *Packet) parseIPv4(b []byte) error {
	if len(b) < IPv4MinHeaderLen {
		return errIPv4Short
	}
	h := IPv4(b)
	hl := h.HeaderLen()
	if hl < IPv4MinHeaderLen {
		return errIPv4IHL
	}
	if hl > len(b) {
		return errIPv4HeaderPast
	}
	total := h.TotalLen()
	if total < hl {
		return errIPv4TotalLen
	}
	if total > len(b) {
		return errIPv4TotalPast
	}
	h = h[:total]
	if !h.ChecksumValid() {
		return errIPv4Checksum
	}
	if h.FlagsFragment()&(IPv4FlagMoreFragments|ipv4FragOffsetMask) != 0 {
		return errIPv4Fragment
	}
	p.Version, p.Proto, p.Src, p.Dst, p.IP = 4, h.Protocol(), h.Src(), h.Dst(), h
	switch p.Proto {
	case ProtoTCP, ProtoUDP, ProtoICMPv4:
		return p.parseTransport(h[hl:])
	}
	return errIPv4Proto
}

func (p *Packet) parseIPv6(b []byte) error {
	if len(b) < IPv6HeaderLen {
		return errIPv6Short
	}
	h := IPv6(b)
	end := IPv6HeaderLen + h.PayloadLen()
	if end > len(b) {
		return errIPv6PayloadLen
	}
	h = h[:end]
	proto, off, err := walkIPv6(h)
	if err != nil {
		return err
	}
	p.Version, p.Proto, p.Src, p.Dst, p.IP = 6, proto, h.Src(), h.Dst(), h
	return p.parseTransport(h[off:])
}

// walkIPv6 follows the extension header chain (RFC 8200 §4) to the first
// header that is not one, returning its type and offset. Each step moves
// at least 8 bytes forward, so the walk is bounded by the packet length.
func walkIPv6(h IPv6) (proto uint8, off int, err error) {
	next, off := h.NextHeader(), IPv6HeaderLen
	for {
		switch next {
		case ProtoTCP, ProtoUDP, ProtoICMPv6:
			return next, off, nil
		case ProtoHopByHop:
			// RFC 8200 §4.1: hop-by-hop options only right after the
			// IPv6 header.
			if off != IPv6HeaderLen {
				return 0, 0, errIPv6HopByHop
			}
		case ProtoRouting, ProtoDestOpts:
		case ProtoFragment:
			return 0, 0, errIPv6Fragment
		case ProtoNoNext:
			return 0, 0, errIPv6NoNext
		default:
			return 0, 0, errIPv6Proto
		}
		// Every header walked here is next header, length in 8-octet
		// units not counting the first 8, then data (RFC 8200 §4.3-4.6).
		if off+8 > len(h) {
			return 0, 0, errIPv6ExtPast
		}
		n := (int(h[off+1]) + 1) * 8
		if off+n > len(h) {
			return 0, 0, errIPv6ExtPast
		}
		// RFC 8200 §4.4: with segments left, this node is not the final
		// destination; forwarding along a source route is not offered.
		if next == ProtoRouting && h[off+3] != 0 {
			return 0, 0, errIPv6Routing
		}
		next, off = h[off], off+n
	}
}

// parseTransport validates the transport message t of p.Proto and sets
// p.Transport and p.Payload.
func (p *Packet) parseTransport(t []byte) error {
	switch p.Proto {
	case ProtoTCP:
		return p.parseTCP(t)
	case ProtoUDP:
		return p.parseUDP(t)
	}
	return p.parseICMP(t)
}

func (p *Packet) parseTCP(t []byte) error {
	if len(t) < TCPMinHeaderLen {
		return errTCPShort
	}
	off := TCP(t).DataOffset()
	if off < TCPMinHeaderLen {
		return errTCPDataOffset
	}
	if off > len(t) {
		return errTCPOffsetPast
	}
	if !p.transportSumValid(t) {
		return errTCPChecksum
	}
	p.Transport, p.Payload = t, t[off:]
	return nil
}

func (p *Packet) parseUDP(t []byte) error {
	if len(t) < UDPHeaderLen {
		return errUDPShort
	}
	n := UDP(t).Length()
	if n < UDPHeaderLen {
		return errUDPLength
	}
	if n > len(t) {
		return errUDPLengthPast
	}
	t = t[:n]
	switch {
	case UDP(t).Checksum() != 0:
		if !p.transportSumValid(t) {
			return errUDPChecksum
		}
	case p.Version == 6:
		// RFC 8200 §8.1: a zero UDP checksum over IPv6 MUST be discarded.
		return errUDPv6NoSum
	}
	p.Transport, p.Payload = t, t[UDPHeaderLen:]
	return nil
}

func (p *Packet) parseICMP(t []byte) error {
	if len(t) < ICMPHeaderLen {
		return errICMPShort
	}
	var ok bool
	if p.Version == 4 {
		ok = Checksum(t, 0) == 0xffff
	} else {
		ok = p.transportSumValid(t)
	}
	if !ok {
		return errICMPChecksum
	}
	p.Transport, p.Payload = t, t[ICMPHeaderLen:]
	return nil
}

// transportSumValid checks a checksum that covers the pseudo-header.
func (p *Packet) transportSumValid(t []byte) bool {
	if p.sumTrusted {
		return true
	}
	return Checksum(t, PseudoHeaderChecksum(p.Proto, p.Src, p.Dst, len(t))) == 0xffff
}
