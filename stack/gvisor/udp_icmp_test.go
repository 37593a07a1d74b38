package gvisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tungate/tungate/stack"
)

// udpEcho is a UDP handler that echoes every datagram and reports the
// flow's ID and its final Read error.
func udpEcho(ids chan<- stack.FlowID, done chan<- error) handlerFuncs {
	return handlerFuncs{udp: func(_ context.Context, c stack.PacketConn) {
		ids <- c.ID()
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			if err != nil {
				done <- err
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				done <- err
				return
			}
		}
	}}
}

func TestUDP_FlowIsHandedToHandlerAndEchoed(t *testing.T) {
	for _, tc := range []struct{ src, dst netip.AddrPort }{
		{netip.AddrPortFrom(clientV4, 5353), netip.AddrPortFrom(serverV4, 53)},
		{netip.AddrPortFrom(clientV6, 5353), netip.AddrPortFrom(serverV6, 53)},
	} {
		t.Run(tc.dst.Addr().String(), func(t *testing.T) {
			ids, done := make(chan stack.FlowID, 4), make(chan error, 4)
			h := newHarness(t, udpEcho(ids, done), DefaultOptions())
			laddr := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(tc.src.Addr().AsSlice()), Port: tc.src.Port()}
			raddr := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(tc.dst.Addr().AsSlice()), Port: tc.dst.Port()}
			cc, err := gonet.DialUDP(h.client, &laddr, &raddr, netProto(tc.dst.Addr()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_ = cc.SetDeadline(time.Now().Add(testTimeout))
			for i := range 3 {
				msg := fmt.Appendf(nil, "datagram %d", i)
				if _, err := cc.Write(msg); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, err := cc.Read(buf)
				if err != nil || !bytes.Equal(buf[:n], msg) {
					t.Fatalf("echo %d = %q, %v", i, buf[:n], err)
				}
			}
			if id := <-ids; id.Src != tc.src || id.Dst != tc.dst {
				t.Errorf("ID = %v, want %s->%s", id, tc.src, tc.dst)
			}
			if st := h.srv.Stats(); st.UDPFlows != 1 {
				t.Errorf("UDPFlows = %d, want 1 for one 4-tuple", st.UDPFlows)
			}
			if err := h.srv.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Errorf("handler Read after Close = %v, want net.ErrClosed", err)
			}
		})
	}
}

func TestUDP_ShortReadTruncatesOneDatagram(t *testing.T) {
	got := make(chan []byte, 2)
	s, _ := newRawStack(t, handlerFuncs{udp: func(_ context.Context, c stack.PacketConn) {
		defer c.Close()
		for range 2 {
			buf := make([]byte, 4)
			n, err := c.Read(buf)
			if err != nil {
				t.Errorf("Read: %v", err)
				return
			}
			got <- buf[:n]
		}
	}}, DefaultOptions())
	src, dst := netip.AddrPortFrom(clientV4, 6000), netip.AddrPortFrom(serverV4, 7000)
	deliver(t, s, rawUDP(src, dst, []byte("first datagram")), rawUDP(src, dst, []byte("second")))
	for _, want := range []string{"firs", "seco"} {
		if b := <-got; string(b) != want {
			t.Errorf("Read = %q, want %q", b, want)
		}
	}
}

// rawUDP builds an IPv4 UDP datagram.
func rawUDP(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	s, d := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber), SrcAddr: s, DstAddr: d,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(u))})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, s, d, uint16(len(u)))
	u.SetChecksum(^u.CalculateChecksum(checksum.Checksum(payload, xsum)))
	return b
}

// echoRequest builds an ICMP or ICMPv6 echo request from src to dst.
func echoRequest(src, dst netip.Addr, ident, seq uint16, payload []byte) []byte {
	s, d := tcpip.AddrFromSlice(src.AsSlice()), tcpip.AddrFromSlice(dst.AsSlice())
	if src.Is4() {
		b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(payload))
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber), SrcAddr: s, DstAddr: d,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		icmp := header.ICMPv4(b[header.IPv4MinimumSize:])
		icmp.SetType(header.ICMPv4Echo)
		icmp.SetIdent(ident)
		icmp.SetSequence(seq)
		copy(icmp.Payload(), payload)
		icmp.SetChecksum(^checksum.Checksum(icmp, 0))
		return b
	}
	b := make([]byte, header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize+len(payload))
	ip := header.IPv6(b)
	ip.Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(b) - header.IPv6MinimumSize), TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit: 64, SrcAddr: s, DstAddr: d,
	})
	icmp := header.ICMPv6(b[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6EchoRequest)
	icmp.SetIdent(ident)
	icmp.SetSequence(seq)
	copy(icmp.Payload(), payload)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp, Src: s, Dst: d,
	}))
	return b
}

// checkEchoReply verifies p answers an echo request from app to dst.
func checkEchoReply(t *testing.T, p []byte, app, dst netip.Addr, ident, seq uint16, payload []byte) {
	t.Helper()
	if app.Is4() {
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || !ip.IsChecksumValid() {
			t.Fatalf("invalid IPv4 header in reply % x", p)
		}
		if toAddr(ip.SourceAddress()) != dst || toAddr(ip.DestinationAddress()) != app {
			t.Errorf("reply %s->%s, want %s->%s", ip.SourceAddress(), ip.DestinationAddress(), dst, app)
		}
		icmp := header.ICMPv4(ip.Payload())
		if icmp.Type() != header.ICMPv4EchoReply || icmp.Code() != 0 || checksum.Checksum(icmp, 0) != 0xffff {
			t.Errorf("reply type %d code %d, checksum valid %v", icmp.Type(), icmp.Code(), checksum.Checksum(icmp, 0) == 0xffff)
		}
		if icmp.Ident() != ident || icmp.Sequence() != seq || !bytes.Equal(icmp.Payload(), payload) {
			t.Errorf("reply ident %d seq %d payload %q", icmp.Ident(), icmp.Sequence(), icmp.Payload())
		}
		return
	}
	ip := header.IPv6(p)
	if !ip.IsValid(len(p)) {
		t.Fatalf("invalid IPv6 header in reply % x", p)
	}
	if toAddr(ip.SourceAddress()) != dst || toAddr(ip.DestinationAddress()) != app {
		t.Errorf("reply %s->%s, want %s->%s", ip.SourceAddress(), ip.DestinationAddress(), dst, app)
	}
	icmp := header.ICMPv6(ip.Payload())
	xsum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(icmp)))
	if icmp.Type() != header.ICMPv6EchoReply || icmp.Code() != 0 || checksum.Checksum(icmp, xsum) != 0xffff {
		t.Errorf("reply type %d code %d, checksum valid %v", icmp.Type(), icmp.Code(), checksum.Checksum(icmp, xsum) == 0xffff)
	}
	if icmp.Ident() != ident || icmp.Sequence() != seq || !bytes.Equal(icmp.Payload(), payload) {
		t.Errorf("reply ident %d seq %d payload %q", icmp.Ident(), icmp.Sequence(), icmp.Payload())
	}
}

func isEchoReply(p []byte) bool {
	switch p[0] >> 4 {
	case 4:
		ip := header.IPv4(p)
		return ip.Protocol() == uint8(header.ICMPv4ProtocolNumber) && header.ICMPv4(ip.Payload()).Type() == header.ICMPv4EchoReply
	case 6:
		ip := header.IPv6(p)
		return tcpip.TransportProtocolNumber(ip.NextHeader()) == header.ICMPv6ProtocolNumber && header.ICMPv6(ip.Payload()).Type() == header.ICMPv6EchoReply
	}
	return false
}

func TestICMP_EchoIsAnsweredForAnyAddress(t *testing.T) {
	for _, tc := range []struct{ app, dst netip.Addr }{
		{clientV4, netip.MustParseAddr("198.19.7.7")},
		{clientV6, netip.MustParseAddr("2001:2::7:7")},
	} {
		t.Run(tc.dst.String(), func(t *testing.T) {
			s, rec := newRawStack(t, handlerFuncs{}, DefaultOptions())
			payload := []byte("abcdefghijklmnopqrstuvwxyz")
			for seq := uint16(1); seq <= 2; seq++ {
				deliver(t, s, echoRequest(tc.app, tc.dst, 0x4242, seq, payload))
				checkEchoReply(t, rec.next(t, isEchoReply), tc.app, tc.dst, 0x4242, seq, payload)
			}
			if st := s.Stats(); st.ICMPEchoReplies != 2 {
				t.Errorf("ICMPEchoReplies = %d, want 2", st.ICMPEchoReplies)
			}
			// gVisor's own responder must stay silent: one reply per request.
			_ = s.Close()
			rec.mu.Lock()
			defer rec.mu.Unlock()
			replies := 0
			for _, p := range rec.pkts {
				if isEchoReply(p) {
					replies++
				}
			}
			if replies != 2 {
				t.Errorf("%d echo replies emitted, want 2", replies)
			}
		})
	}
}

func TestICMP_EchoWithBadChecksumIsDropped(t *testing.T) {
	for _, app := range []netip.Addr{clientV4, clientV6} {
		t.Run(app.String(), func(t *testing.T) {
			s, rec := newRawStack(t, handlerFuncs{}, DefaultOptions())
			dst := serverV4
			if app.Is6() {
				dst = serverV6
			}
			bad := echoRequest(app, dst, 1, 1, []byte("payload"))
			bad[len(bad)-1] ^= 0xff
			deliver(t, s, bad)
			if st := s.Stats(); st.ICMPEchoReplies != 0 || st.Malformed == 0 {
				t.Errorf("stats = %+v, want no reply and a malformed count", st)
			}
			// A valid request afterwards is answered: the drop was the checksum.
			deliver(t, s, echoRequest(app, dst, 1, 2, []byte("payload")))
			checkEchoReply(t, rec.next(t, isEchoReply), app, dst, 1, 2, []byte("payload"))
		})
	}
}

func TestUDP_RefuseAnswersPortUnreachable(t *testing.T) {
	refused := make(chan error, 1)
	s, rec := newRawStack(t, handlerFuncs{udp: func(_ context.Context, c stack.PacketConn) {
		refused <- c.(stack.Refuser).Refuse()
	}}, DefaultOptions())
	src, dst := netip.AddrPortFrom(clientV4, 6001), netip.AddrPortFrom(serverV4, 53)
	deliver(t, s, rawUDP(src, dst, []byte("query")))
	if err := <-refused; err != nil {
		t.Fatalf("Refuse: %v", err)
	}
	p := rec.next(t, func(b []byte) bool { return header.IPv4(b).Protocol() == uint8(header.ICMPv4ProtocolNumber) })
	ip := header.IPv4(p)
	icmp := header.ICMPv4(ip.Payload())
	if icmp.Type() != header.ICMPv4DstUnreachable || icmp.Code() != header.ICMPv4PortUnreachable {
		t.Errorf("type %d code %d, want port unreachable", icmp.Type(), icmp.Code())
	}
	if netip.AddrFrom4(ip.SourceAddress().As4()) != serverV4 || netip.AddrFrom4(ip.DestinationAddress().As4()) != clientV4 {
		t.Errorf("%v → %v", ip.SourceAddress(), ip.DestinationAddress())
	}
	if q := icmp.Payload(); !strings.HasSuffix(string(q), "query") {
		t.Errorf("quote %q", q)
	}
	if st := s.Stats(); st.UDPRefused != 1 {
		t.Errorf("UDPRefused = %d", st.UDPRefused)
	}
}
