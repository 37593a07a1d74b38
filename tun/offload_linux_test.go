package tun_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/internal/virtio"
	"github.com/tungate/tungate/tun"
	"github.com/vishvananda/netns"
)

// A kernel TCP client sends through the TUN with offload on: its
// segments arrive as TSO superpackets, whole, checksum partial; a
// superpacket written back reaches it cut into segments, data intact.
func TestLinux_OffloadCarriesTCPSuperpacketsBothWays(t *testing.T) {
	ns := testNetns(t)
	dev, err := openInNetns(t, ns, tun.Config{
		Name: "tgtun0", MTU: 1500, Offload: true,
		Addresses: []netip.Prefix{tunAddr4},
		Routes:    []netip.Prefix{tunRoute},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !dev.Offloads() {
		t.Fatal("offload asked for and not on")
	}
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan []byte, 1024)
	done := make(chan error, 1)
	go func() {
		done <- tun.ReadLoopOffload(ctx, dev, func(pkts [][]byte) error {
			for _, p := range pkts {
				got <- bytes.Clone(p)
			}
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ReadLoopOffload = %v", err)
		}
	}()

	server := netip.AddrPortFrom(peerAddr4.Addr(), 80)
	w := tun.NewWriter(dev)
	iss := uint32(1000)
	var client netip.AddrPort
	send := func(flags packet.TCPFlags, seq, ack uint32, opts *packet.TCPOptions, data []byte, gso int) error {
		b := make([]byte, tun.Headroom+60+len(data))
		n, err := packet.BuildTCP(b[tun.Headroom:], packet.TCPHeader{Src: server, Dst: client, Seq: seq, Ack: ack,
			Flags: flags, Window: 65535, Options: opts, PartialChecksum: true}, data)
		if err != nil {
			return err
		}
		th := n - len(data) - packet.IPv4MinHeaderLen
		virtio.TCPSuperpacket(false, packet.IPv4MinHeaderLen, th, gso).Encode(b[tun.Headroom-virtio.HdrLen:])
		_, err = w.WritePacketsOffload([][]byte{b[:tun.Headroom+n]}, tun.Headroom)
		return err
	}
	// The SYN, answered by hand on another goroutine while the client
	// connects: MSS 1460, no window scaling, a window of 64 KB.
	answered := make(chan uint32, 1)
	go func() {
		defer close(answered)
		for raw := range got {
			p, err := packet.ParseIPTrusted(raw[virtio.HdrLen:])
			if err != nil || p.Proto != packet.ProtoTCP || p.TCP().Flags()&packet.SYN == 0 {
				continue
			}
			client = p.SrcAddrPort()
			cseq := p.TCP().Seq() + 1
			if err := send(packet.SYN|packet.ACK, iss, cseq, &packet.TCPOptions{MSS: 1460, HasMSS: true}, nil, 0); err != nil {
				t.Errorf("SYN-ACK: %v", err)
				return
			}
			answered <- cseq
			return
		}
	}()
	var conn net.Conn
	inNetns(t, ns, func() { conn, err = net.DialTimeout("tcp4", server.String(), 5*time.Second) })
	if err != nil {
		t.Fatalf("dial through the TUN: %v", err)
	}
	cseq, ok := <-answered
	if !ok {
		t.Fatal("no SYN-ACK sent")
	}
	defer conn.Close()

	// Upload: 10 segments fit the client's first flight; with TSO they
	// leave as one or a few superpackets of 1460-byte segments.
	data := randomBytes(t, 10*1460)
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	var recv []byte
	superpackets := 0
	for len(recv) < len(data) {
		p := nextTCP(t, got, func(h virtio.Hdr, p packet.Packet) bool {
			if len(p.Payload) == 0 {
				return false
			}
			if h.IsGSO() {
				if h.GSOSize != 1460 || len(p.IP) <= 1500 {
					t.Errorf("superpacket of %d bytes with segments of %d", len(p.IP), h.GSOSize)
				}
				superpackets++
			}
			return true
		})
		if p.TCP().Seq() != cseq+uint32(len(recv)) {
			t.Fatalf("data at %d, want %d", p.TCP().Seq()-cseq, len(recv))
		}
		recv = append(recv, p.Payload...)
	}
	if !bytes.Equal(recv, data) {
		t.Fatal("upload arrived changed")
	}
	if superpackets == 0 {
		t.Error("no superpacket read: the kernel split the flight before the TUN")
	}

	// Download: one superpacket of 3 segments (and the ACK of the upload).
	down := randomBytes(t, 3*1000)
	if err := send(packet.ACK|packet.PSH, iss+1, cseq+uint32(len(data)), nil, down, 1000); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	back := make([]byte, len(down))
	if _, err := io.ReadFull(conn, back); err != nil || !bytes.Equal(back, down) {
		t.Fatalf("download: %v, intact %v", err, bytes.Equal(back, down))
	}

	// Plain WritePackets on the superpacket path: the writer puts a
	// zero header before the packet, whatever the headroom held.
	writeDatagram(t, ns, w, "plain", 0xff)
}

// writeDatagram writes a UDP datagram with w, the headroom filled with
// junk, and expects a socket in ns to receive it.
func writeDatagram(t *testing.T, ns netns.NsHandle, w *tun.Writer, msg string, junk byte) {
	t.Helper()
	var uc *net.UDPConn
	var err error
	inNetns(t, ns, func() {
		uc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunAddr4.Addr(), 0)))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	dg := withHeadroom(udpPacket(t, peerAddr4, uc.LocalAddr().(*net.UDPAddr).AddrPort(), []byte(msg)))
	for i := range tun.Headroom {
		dg[i] = junk
	}
	if n, err := w.WritePackets([][]byte{dg}, tun.Headroom); n != 1 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	expectDatagrams(t, uc, msg)
}

// nextTCP returns the next TCP packet read that want accepts, checking
// that a partial checksum is what the header says it is.
func nextTCP(t *testing.T, got <-chan []byte, want func(virtio.Hdr, packet.Packet) bool) packet.Packet {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case raw := <-got:
			h := virtio.Decode(raw)
			pkt := raw[virtio.HdrLen:]
			p, err := packet.ParseIPTrusted(pkt)
			if err != nil || p.Proto != packet.ProtoTCP {
				continue // IPv6 router solicitations and the like
			}
			if err := h.CheckInbound(p.IP, len(p.IP)-len(p.Transport)); err != nil {
				t.Fatalf("read header %+v: %v", h, err)
			}
			if !h.ChecksumTrusted() {
				if _, err := packet.ParseIP(pkt); err != nil {
					t.Fatalf("packet without an offload flag: %v", err)
				}
			}
			if want(h, p) {
				return p
			}
		case <-timeout:
			t.Fatal("timed out waiting for a TCP packet from the TUN")
		}
	}
}

// With Queues the device has that many queues; the kernel spreads flows
// over them, and each queue reads and writes on the superpacket path.
func TestLinux_MultiQueueSpreadsFlowsOverItsQueues(t *testing.T) {
	ns := testNetns(t)
	dev, err := openInNetns(t, ns, tun.Config{
		Name: "tgtun0", MTU: 1500, Offload: true, Queues: 2,
		Addresses: []netip.Prefix{tunAddr4},
		Routes:    []netip.Prefix{tunRoute},
	})
	if err != nil {
		t.Fatal(err)
	}
	qs := dev.Queues()
	if len(qs) != 2 {
		t.Fatalf("%d queues, want 2", len(qs))
	}
	if _, err := qs[1].Read(make([][]byte, 1), make([]int, 1), tun.Headroom); err == nil {
		t.Error("plain Read on an extra queue did not fail")
	}
	ctx, cancel := context.WithCancel(t.Context())
	type pkt struct {
		queue int
		raw   []byte
	}
	got := make(chan pkt, 1024)
	done := make(chan error, len(qs))
	for i, q := range qs {
		go func() {
			done <- tun.ReadLoopOffload(ctx, q, func(pkts [][]byte) error {
				for _, p := range pkts {
					select {
					case got <- pkt{i, bytes.Clone(p)}:
					default:
					}
				}
				return nil
			})
		}()
	}
	defer func() {
		cancel()
		for range qs {
			if err := <-done; err != nil {
				t.Errorf("ReadLoopOffload = %v", err)
			}
		}
	}()
	// 32 connection attempts from as many ports: their SYNs land on both
	// queues (all on one has a chance of 2^-31). A dial that gives up
	// before its SYN leaves is possible, so most, not all, must be seen.
	inNetns(t, ns, func() {
		for i := range 32 {
			d := net.Dialer{Timeout: 5 * time.Millisecond}
			_, _ = d.Dial("tcp4", netip.AddrPortFrom(peerAddr4.Addr(), uint16(1000+i)).String())
		}
	})
	perQueue := make([]int, len(qs))
	ports := map[uint16]bool{}
	timeout := time.After(2 * time.Second)
collect:
	for len(ports) < 32 {
		select {
		case p := <-got:
			pk, err := packet.ParseIPTrusted(p.raw[virtio.HdrLen:])
			if err == nil && pk.Proto == packet.ProtoTCP && pk.TCP().Flags()&packet.SYN != 0 && !ports[pk.DstAddrPort().Port()] {
				ports[pk.DstAddrPort().Port()] = true
				perQueue[p.queue]++
			}
		case <-timeout:
			break collect
		}
	}
	if len(ports) < 24 {
		t.Fatalf("SYNs of %d flows seen (per queue %v), want at least 24 of 32", len(ports), perQueue)
	}
	if perQueue[0] == 0 || perQueue[1] == 0 {
		t.Errorf("SYNs per queue %v: the kernel did not spread the flows", perQueue)
	}
	// A write on the second queue reaches a socket.
	writeDatagram(t, ns, tun.NewWriter(qs[1]), "q1", 0)
}
