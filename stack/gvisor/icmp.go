package gvisor

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/tungate/tungate/stack"
)

// echoHopLimit is the TTL / hop limit of echo replies, Linux's default.
const echoHopLimit = 64

// The stack answers echo requests itself rather than through gVisor: in
// promiscuous mode gVisor treats a destination it does not own as a
// temporary address and, for IPv4, deliberately sends no echo reply to
// it. Installed as the ICMP default handler, these functions see echo
// requests to every address, IPv4 and IPv6 alike, and build the reply
// directly into a headroom buffer.

// onICMPv4 answers ICMPv4 echo requests; other messages go back to gVisor.
func (s *Stack) onICMPv4(_ gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
	ip := header.IPv4(pkt.NetworkHeader().Slice())
	msg := gvstack.PayloadSince(pkt.TransportHeader())
	defer msg.Release()
	req := msg.AsSlice()
	if len(req) < header.ICMPv4MinimumSize || header.ICMPv4(req).Type() != header.ICMPv4Echo {
		return false
	}
	if checksum.Checksum(req, 0) != 0xffff {
		return true // gVisor hands these over but has counted them invalid
	}
	src, dst := ip.DestinationAddress(), ip.SourceAddress()
	if ip.DestinationAddress() == header.IPv4Broadcast || header.IsV4MulticastAddress(src) {
		return true
	}
	buf := make([]byte, stack.Headroom+header.IPv4MinimumSize+len(req))
	out := header.IPv4(buf[stack.Headroom:])
	out.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(out)),
		TTL:         echoHopLimit,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     src,
		DstAddr:     dst,
	})
	out.SetChecksum(^out.CalculateChecksum())
	reply := header.ICMPv4(out[header.IPv4MinimumSize:])
	copy(reply, req)
	reply.SetType(header.ICMPv4EchoReply)
	reply.SetCode(0)
	reply.SetChecksum(0)
	reply.SetChecksum(^checksum.Checksum(reply, 0))
	s.sendEchoReply(buf)
	return true
}

// onICMPv6 answers ICMPv6 echo requests; other messages (NDP, MLD, ...) go
// back to gVisor.
func (s *Stack) onICMPv6(_ gvstack.TransportEndpointID, pkt *gvstack.PacketBuffer) bool {
	ip := header.IPv6(pkt.NetworkHeader().Slice())
	msg := gvstack.PayloadSince(pkt.TransportHeader())
	defer msg.Release()
	req := msg.AsSlice()
	if len(req) < header.ICMPv6EchoMinimumSize || header.ICMPv6(req).Type() != header.ICMPv6EchoRequest {
		return false
	}
	src, dst := ip.DestinationAddress(), ip.SourceAddress()
	if checksum.Checksum(req, header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, dst, src, uint16(len(req)))) != 0xffff {
		return true // gVisor verifies and counts these before; kept as a guard
	}
	if src.Len() != 16 || header.IsV6MulticastAddress(src) {
		return true
	}
	buf := make([]byte, stack.Headroom+header.IPv6MinimumSize+len(req))
	out := header.IPv6(buf[stack.Headroom:])
	out.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(len(req)),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          echoHopLimit,
		SrcAddr:           src,
		DstAddr:           dst,
	})
	reply := out[header.IPv6MinimumSize:]
	copy(reply, req)
	reply[0] = byte(header.ICMPv6EchoReply)
	reply[1] = 0
	binary.BigEndian.PutUint16(reply[2:], 0)
	xsum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, src, dst, uint16(len(reply)))
	binary.BigEndian.PutUint16(reply[2:], ^checksum.Checksum(reply, xsum))
	s.sendEchoReply(buf)
	return true
}

// sendEchoReply writes buf (headroom, then the reply) unless it exceeds
// the MTU: the request may have been reassembled from fragments, and the
// reply is not fragmented.
func (s *Stack) sendEchoReply(buf []byte) {
	if len(buf)-stack.Headroom > s.opts.MTU {
		s.log.Debug("gvisor: echo reply exceeds mtu; dropped", "len", len(buf)-stack.Headroom)
		return
	}
	if n, _ := s.link.write([][]byte{buf}); n == 1 {
		s.echoReplies.Add(1)
	}
}
