package packet

import (
	"fmt"
	"net/netip"
)

// The builders write a complete IP packet into a caller's buffer and return
// its length. They do not allocate on success. The IP header is minimal:
// IPv4 without options, DF set, ID 0 (RFC 6864 §4.1 allows any ID on
// atomic datagrams), TOS 0; IPv6 without extension headers, traffic class
// and flow label 0. The address family of the packet is that of the
// addresses; an IPv4-mapped IPv6 address makes an IPv6 packet.
//
// The payload is copied first, with copy semantics, so it may already sit
// in b at its final place (after the headers), or overlap it.

// TCPHeader describes a segment for BuildTCP.
type TCPHeader struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    TCPFlags
	Window   uint16
	Urgent   uint16

	// Options, when not nil, is encoded with PutTCPOptions.
	Options *TCPOptions
	// RawOptions is written as is when Options is nil; its length must be
	// a multiple of 4 and at most TCPMaxOptionsLen.
	RawOptions []byte

	// TTL is the IPv4 TTL or IPv6 hop limit; 0 means DefaultTTL.
	TTL uint8

	// PartialChecksum leaves the TCP checksum to the kernel: the field
	// gets only the pseudo-header sum, for a packet written to the TUN
	// with a virtio-net header that says NEEDS_CSUM (internal/virtio).
	PartialChecksum bool
}

// UDPHeader describes a datagram for BuildUDP.
type UDPHeader struct {
	Src, Dst netip.AddrPort
	TTL      uint8 // 0 means DefaultTTL
}

// EchoHeader describes an ICMP or ICMPv6 echo message for BuildEcho.
type EchoHeader struct {
	Src, Dst netip.Addr
	Reply    bool // echo reply (type 0 or 129) instead of request (8 or 128)
	ID, Seq  uint16
	TTL      uint8 // 0 means DefaultTTL
}

// optionsLen returns the length of the options h will write.
func (h *TCPHeader) optionsLen() (int, error) {
	if h.Options != nil {
		if h.RawOptions != nil {
			return 0, fmt.Errorf("packet: TCP header has both Options and RawOptions: %w", ErrBadOptions)
		}
		return TCPOptionsLen(h.Options), nil
	}
	if n := len(h.RawOptions); n%4 != 0 || n > TCPMaxOptionsLen {
		return 0, fmt.Errorf("packet: raw TCP options of %d bytes, need a multiple of 4 up to %d: %w",
			n, TCPMaxOptionsLen, ErrBadOptions)
	}
	return len(h.RawOptions), nil
}

// PacketLen returns the length of the packet BuildTCP writes for h with a
// payload of n bytes, or an error for invalid options or addresses.
func (h *TCPHeader) PacketLen(n int) (int, error) {
	v4, err := family(h.Src.Addr(), h.Dst.Addr())
	if err != nil {
		return 0, err
	}
	opts, err := h.optionsLen()
	if err != nil {
		return 0, err
	}
	return ipHeaderLen(v4) + TCPMinHeaderLen + opts + n, nil
}

// BuildTCP writes an IPv4 or IPv6 packet carrying a TCP segment into b,
// with both checksums, and returns its length. It fails with ErrAddress,
// ErrBadOptions, ErrTooLarge or ErrShortBuffer (wrapped).
func BuildTCP(b []byte, h TCPHeader, payload []byte) (int, error) {
	opts, err := h.optionsLen()
	if err != nil {
		return 0, err
	}
	hdr := TCPMinHeaderLen + opts
	hl, n, err := putIP(b, ProtoTCP, h.Src.Addr(), h.Dst.Addr(), h.TTL, hdr, payload)
	if err != nil {
		return 0, fmt.Errorf("packet: build TCP: %w", err)
	}
	t := TCP(b[hl:n])
	t.SetSrcPort(h.Src.Port())
	t.SetDstPort(h.Dst.Port())
	t.SetSeq(h.Seq)
	t.SetAck(h.Ack)
	t.SetDataOffset(hdr)
	t.SetFlags(h.Flags)
	t.SetWindow(h.Window)
	t.SetUrgent(h.Urgent)
	if h.Options != nil {
		PutTCPOptions(t[TCPMinHeaderLen:hdr], h.Options)
	} else {
		copy(t[TCPMinHeaderLen:hdr], h.RawOptions)
	}
	if h.PartialChecksum {
		t.SetChecksum(PseudoHeaderChecksum(ProtoTCP, h.Src.Addr(), h.Dst.Addr(), len(t)))
	} else {
		t.SetChecksum(t.ComputeChecksum(h.Src.Addr(), h.Dst.Addr()))
	}
	return n, nil
}

// BuildUDP writes an IPv4 or IPv6 packet carrying a UDP datagram into b,
// with both checksums, and returns its length. It fails with ErrAddress,
// ErrTooLarge or ErrShortBuffer (wrapped).
func BuildUDP(b []byte, h UDPHeader, payload []byte) (int, error) {
	hl, n, err := putIP(b, ProtoUDP, h.Src.Addr(), h.Dst.Addr(), h.TTL, UDPHeaderLen, payload)
	if err != nil {
		return 0, fmt.Errorf("packet: build UDP: %w", err)
	}
	u := UDP(b[hl:n])
	u.SetSrcPort(h.Src.Port())
	u.SetDstPort(h.Dst.Port())
	u.SetLength(len(u))
	u.SetChecksum(u.ComputeChecksum(h.Src.Addr(), h.Dst.Addr()))
	return n, nil
}

// BuildEcho writes an ICMPv4 (IPv4 addresses) or ICMPv6 echo request or
// reply into b, with checksums, and returns its length. It fails with
// ErrAddress, ErrTooLarge or ErrShortBuffer (wrapped).
func BuildEcho(b []byte, h EchoHeader, payload []byte) (int, error) {
	proto, typ := uint8(ProtoICMPv4), uint8(ICMPv4EchoRequest)
	switch {
	case h.Src.Is4() && h.Reply:
		typ = ICMPv4EchoReply
	case !h.Src.Is4() && h.Reply:
		proto, typ = ProtoICMPv6, ICMPv6EchoReply
	case !h.Src.Is4():
		proto, typ = ProtoICMPv6, ICMPv6EchoRequest
	}
	hl, n, err := putIP(b, proto, h.Src, h.Dst, h.TTL, ICMPHeaderLen, payload)
	if err != nil {
		return 0, fmt.Errorf("packet: build echo: %w", err)
	}
	m := ICMPv4(b[hl:n]) // same layout as ICMPv6 up to the checksum
	m.SetType(typ)
	m.SetCode(0)
	m.SetID(h.ID)
	m.SetSeq(h.Seq)
	if proto == ProtoICMPv4 {
		m.SetChecksum(m.ComputeChecksum())
	} else {
		m.SetChecksum(ICMPv6(m).ComputeChecksum(h.Src, h.Dst))
	}
	return n, nil
}

// errNotEcho is returned by EchoReply for anything but an echo request.
var errNotEcho = newError("packet: not an ICMP echo request", ErrUnsupported)

// EchoReply writes into b the echo reply to req, a packet from ParseIP
// holding an ICMPv4 (type 8) or ICMPv6 (type 128) echo request with code 0:
// addresses swapped, same identifier, sequence number and data, fresh IP
// header (IP options and extension headers are not echoed), checksums
// recomputed. b may be the buffer req aliases, to answer in place. It
// returns the length written; req that is not an echo request gives an
// error matching ErrUnsupported, without allocating. Whether to answer at
// all (multicast or broadcast destinations, rate limits) is the caller's
// decision.
func EchoReply(b []byte, req Packet) (int, error) {
	want := uint8(ICMPv4EchoRequest)
	if req.Proto == ProtoICMPv6 {
		want = ICMPv6EchoRequest
	} else if req.Proto != ProtoICMPv4 {
		return 0, errNotEcho
	}
	m := ICMPv4(req.Transport)
	if len(m) < ICMPHeaderLen || m.Type() != want || m.Code() != 0 {
		return 0, errNotEcho
	}
	h := EchoHeader{Src: req.Dst, Dst: req.Src, Reply: true, ID: m.ID(), Seq: m.Seq()}
	return BuildEcho(b, h, req.Payload)
}

// family reports whether src and dst form an IPv4 pair, or fails when
// they are invalid or of different families.
func family(src, dst netip.Addr) (v4 bool, err error) {
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return false, fmt.Errorf("packet: addresses %v and %v: %w", src, dst, ErrAddress)
	}
	return src.Is4(), nil
}

func ipHeaderLen(v4 bool) int {
	if v4 {
		return IPv4MinHeaderLen
	}
	return IPv6HeaderLen
}

// putIP copies payload behind the IP header and a transport header of hdr
// bytes, then writes the IP header. It returns the IP header length and
// the packet length; the transport header is left for the caller.
func putIP(b []byte, proto uint8, src, dst netip.Addr, ttl uint8, hdr int, payload []byte) (hl, n int, err error) {
	v4, err := family(src, dst)
	if err != nil {
		return 0, 0, err
	}
	hl = ipHeaderLen(v4)
	tl := hdr + len(payload)
	n = hl + tl
	if (v4 && n > IPv4MaxTotalLen) || (!v4 && tl > IPv6MaxPayloadLen) {
		return 0, 0, fmt.Errorf("%d-byte packet: %w", n, ErrTooLarge)
	}
	if len(b) < n {
		return 0, 0, fmt.Errorf("%d-byte packet in %d bytes: %w", n, len(b), ErrShortBuffer)
	}
	copy(b[hl+hdr:n], payload)
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if v4 {
		putIPv4(IPv4(b[:hl]), proto, src, dst, ttl, n)
	} else {
		putIPv6(IPv6(b[:hl]), proto, src, dst, ttl, tl)
	}
	return hl, n, nil
}

func putIPv4(h IPv4, proto uint8, src, dst netip.Addr, ttl uint8, total int) {
	h.SetVersionHeaderLen(IPv4MinHeaderLen)
	h.SetTOS(0)
	h.SetTotalLen(total)
	h.SetID(0)
	h.SetFlagsFragment(IPv4FlagDontFragment)
	h.SetTTL(ttl)
	h.SetProtocol(proto)
	h.SetSrc(src)
	h.SetDst(dst)
	h.SetChecksum(h.ComputeChecksum())
}

func putIPv6(h IPv6, proto uint8, src, dst netip.Addr, ttl uint8, payloadLen int) {
	h.SetVersionClassFlow(0, 0)
	h.SetPayloadLen(payloadLen)
	h.SetNextHeader(proto)
	h.SetHopLimit(ttl)
	h.SetSrc(src)
	h.SetDst(dst)
}

// Quote limits of ICMP errors: as much of the offending datagram as keeps
// the error within the minimum MTU (RFC 1812 §4.3.2.3: 576 bytes for
// IPv4; RFC 4443 §2.4 (c): 1280 for IPv6).
const (
	maxICMPv4Error = 576
	maxICMPv6Error = 1280
)

// Port-unreachable codes of the destination unreachable messages.
const (
	ICMPv4CodePortUnreach = 3 // RFC 792
	ICMPv6CodePortUnreach = 4 // RFC 4443 §3.1
)

// BuildUDPPortUnreachable writes into b the ICMP port unreachable that
// answers a UDP datagram from app to dst carrying payload, as dst's host
// sends when nothing listens on its port: from dst to app, quoting the
// datagram (rebuilt: header and the start of payload) as far as the
// minimum MTU allows. It returns the length written.
func BuildUDPPortUnreachable(b []byte, app, dst netip.AddrPort, payload []byte) (int, error) {
	v4, err := family(app.Addr(), dst.Addr())
	if err != nil {
		return 0, err
	}
	limit, proto, typ, code := maxICMPv6Error, uint8(ProtoICMPv6), uint8(ICMPv6DestUnreach), uint8(ICMPv6CodePortUnreach)
	if v4 {
		limit, proto, typ, code = maxICMPv4Error, ProtoICMPv4, ICMPv4DestUnreach, ICMPv4CodePortUnreach
	}
	quoteMax := limit - ipHeaderLen(v4) - ICMPHeaderLen
	quote := make([]byte, min(quoteMax, ipHeaderLen(v4)+UDPHeaderLen+len(payload)))
	full := make([]byte, ipHeaderLen(v4)+UDPHeaderLen+len(payload))
	n, err := BuildUDP(full, UDPHeader{Src: app, Dst: dst}, payload)
	if err != nil {
		return 0, fmt.Errorf("packet: build port unreachable: %w", err)
	}
	copy(quote, full[:n])
	hl, total, err := putIP(b, proto, dst.Addr(), app.Addr(), 0, ICMPHeaderLen, quote)
	if err != nil {
		return 0, fmt.Errorf("packet: build port unreachable: %w", err)
	}
	m := ICMPv4(b[hl:total])
	m.SetType(typ)
	m.SetCode(code)
	m.SetID(0) // unused
	m.SetSeq(0)
	if v4 {
		m.SetChecksum(m.ComputeChecksum())
	} else {
		m.SetChecksum(ICMPv6(m).ComputeChecksum(dst.Addr(), app.Addr()))
	}
	return total, nil
}
