package tcp

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/internal/virtio"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest"
)

// offloadCapture is the harness's writer on the superpacket path. It
// keeps every packet as written (raw) and hands the harness what the
// kernel would make of it: a superpacket cut into segments of GSOSize,
// PSH and FIN on the last one only, every checksum completed. Packets
// whose header or checksums are wrong fail the test.
type offloadCapture struct {
	capture
	raw *[]rawPacket
}

// rawPacket is one write on the superpacket path.
type rawPacket struct {
	hdr virtio.Hdr
	pkt []byte
}

var _ stack.OffloadWriter = offloadCapture{}

func (c offloadCapture) Offloads() bool { return true }

func (c offloadCapture) WritePackets(bufs [][]byte, offset int) (int, error) {
	c.h.t.Errorf("WritePackets on the superpacket path")
	return c.capture.WritePackets(bufs, offset)
}

func (c offloadCapture) WritePacketsOffload(bufs [][]byte, offset int) (int, error) {
	t := c.h.t
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	for _, b := range bufs {
		hdr := virtio.Decode(b[offset-virtio.HdrLen:])
		pkt := append([]byte(nil), b[offset:]...)
		*c.raw = append(*c.raw, rawPacket{hdr, pkt})
		c.h.out = append(c.h.out, kernelSegments(t, hdr, pkt)...)
	}
	return len(bufs), nil
}

// kernelSegments is what the kernel does with a packet written with hdr.
func kernelSegments(t *testing.T, hdr virtio.Hdr, pkt []byte) [][]byte {
	t.Helper()
	if hdr.Flags&virtio.FlagNeedsCsum == 0 {
		if hdr != (virtio.Hdr{}) {
			t.Errorf("header %+v without NEEDS_CSUM", hdr)
		}
		return [][]byte{pkt}
	}
	p, err := packet.ParseIPTrusted(pkt)
	if err != nil {
		t.Fatalf("superpacket path wrote a bad packet: %v", err)
	}
	ihl := len(p.IP) - len(p.Transport)
	tc := p.TCP()
	if p.Proto != packet.ProtoTCP || int(hdr.CsumStart) != ihl || hdr.CsumOffset != 16 {
		t.Fatalf("checksum at %d+%d of a protocol %d packet with a %d-byte IP header", hdr.CsumStart, hdr.CsumOffset, p.Proto, ihl)
	}
	if want := packet.PseudoHeaderChecksum(packet.ProtoTCP, p.Src, p.Dst, len(p.Transport)); tc.Checksum() != want {
		t.Fatalf("partial checksum %#x, want the pseudo-header sum %#x", tc.Checksum(), want)
	}
	complete := func(seg []byte) []byte {
		q, err := packet.ParseIPTrusted(seg)
		if err != nil {
			t.Fatalf("segment: %v", err)
		}
		st := q.TCP()
		st.SetChecksum(0)
		st.SetChecksum(st.ComputeChecksum(q.Src, q.Dst))
		if _, err := packet.ParseIP(seg); err != nil {
			t.Fatalf("completed segment: %v", err)
		}
		return seg
	}
	if !hdr.IsGSO() {
		return [][]byte{complete(pkt)}
	}
	hl := ihl + tc.DataOffset()
	if int(hdr.HdrLen) != hl || (hdr.GSOType == virtio.GSOTCPv4) != (p.Version == 4) {
		t.Fatalf("superpacket header %+v for IPv%d with %d header bytes", hdr, p.Version, hl)
	}
	payload := pkt[hl:]
	if len(payload) <= int(hdr.GSOSize) {
		t.Fatalf("a superpacket of %d bytes, one segment of %d", len(payload), hdr.GSOSize)
	}
	var segs [][]byte
	flags := tc.Flags()
	for off := 0; off < len(payload); off += int(hdr.GSOSize) {
		n := min(int(hdr.GSOSize), len(payload)-off)
		seg := append(append([]byte(nil), pkt[:hl]...), payload[off:off+n]...)
		if p.Version == 4 {
			h := packet.IPv4(seg)
			h.SetTotalLen(len(seg))
			h.SetChecksum(0)
			h.SetChecksum(h.ComputeChecksum())
		} else {
			packet.IPv6(seg).SetPayloadLen(len(seg) - ihl)
		}
		st := packet.TCP(seg[ihl:])
		st.SetSeq(tc.Seq() + uint32(off))
		if off+n < len(payload) {
			st.SetFlags(flags &^ (packet.PSH | packet.FIN))
		}
		segs = append(segs, complete(seg))
	}
	return segs
}

// newOffloadHarness is newPktHarness with an engine on the superpacket
// path; raw collects what it writes.
func newOffloadHarness(t *testing.T) (*pktHarness, *[]rawPacket) {
	t.Helper()
	h := &pktHarness{t: t, clk: clock.NewManual(pktT0), reqs: make(chan stack.Request, 64)}
	opts := DefaultOptions()
	opts.Clock = h.clk
	raw := new([]rawPacket)
	e, err := New(offloadCapture{capture{h}, raw}, chanHandler{h.reqs}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	t.Cleanup(func() { e.Close() })
	return h, raw
}

func (h *pktHarness) takeRaw(raw *[]rawPacket) []rawPacket {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := *raw
	*raw = nil
	return r
}

// establishScaled is establish with a Linux client's options, so that
// the app's window (65535 << 7) lets a large flight out.
func (h *pktHarness) establishScaled() (stack.Conn, uint32) {
	h.t.Helper()
	h.send(seg{seq: nearWrap, flags: packet.SYN, opts: fullSYNOpts(1)})
	r := h.request()
	done := make(chan stack.Conn, 1)
	go func() {
		c, err := r.Accept(context.Background())
		if err != nil {
			h.t.Errorf("Accept: %v", err)
		}
		done <- c
	}()
	sa := h.expectOne("SYN-ACK")
	h.send(seg{seq: nearWrap + 1, ack: sa.seq + 1, flags: packet.ACK, opts: &packet.TCPOptions{HasTS: true, TSVal: 2, TSEcr: sa.opts.TSVal}})
	return <-done, sa.seq
}

// offloadEstablished is an established connection on the superpacket
// path, with nothing captured yet; the test's cleanup closes the Conn.
func offloadEstablished(t *testing.T) (*pktHarness, *[]rawPacket, stack.Conn, uint32) {
	h, raw := newOffloadHarness(t)
	c, iss := h.establishScaled()
	t.Cleanup(func() { c.Close() })
	h.take()
	h.takeRaw(raw)
	return h, raw, c, iss
}

func TestEngine_OffloadWritesDataAsSuperpackets(t *testing.T) {
	h, raw, c, iss := offloadEstablished(t)
	data := pattern(0, 100_000)
	go c.Write(data)
	// The first flight is the initial window: 10 segments (RFC 6928,
	// which Linux and the engine use), in one superpacket.
	var segs []got
	stacktest.Eventually(t, "the first flight", func() bool { segs = append(segs, h.take()...); return len(segs) >= 10 })
	rs := h.takeRaw(raw)
	if len(rs) != 1 {
		t.Fatalf("%d packets written for the first flight, want 1 superpacket", len(rs))
	}
	mss := 1460 - 12 // timestamps on every segment
	if hdr := rs[0].hdr; !hdr.IsGSO() || int(hdr.GSOSize) != mss || hdr.GSOType != virtio.GSOTCPv4 {
		t.Fatalf("first flight header %+v, want GSO TCPv4 of %d-byte segments", hdr, mss)
	}
	var got []byte
	for i, s := range segs {
		if s.seq != iss+1+uint32(i*mss) || len(s.data) != mss || s.flags != packet.ACK {
			t.Fatalf("segment %d: seq %d len %d flags %v", i, s.seq-iss, len(s.data), s.flags)
		}
		got = append(got, s.data...)
	}
	if !bytes.Equal(got, data[:len(got)]) {
		t.Fatal("superpacket payload differs from the data written")
	}
	if s := h.e.Stats(); s.SuperpacketsOut != 1 || s.PacketsOut < 1 {
		t.Errorf("SuperpacketsOut %d, want 1", s.SuperpacketsOut)
	}
	// The app's ACK of it all releases the next flight (cwnd grows in
	// slow start), again whole, with its last segment shorter when the
	// data ends there.
	h.send(seg{seq: nearWrap + 1, ack: iss + 1 + uint32(10*mss), flags: packet.ACK, wnd: 65535,
		opts: &packet.TCPOptions{HasTS: true, TSVal: 3, TSEcr: segs[9].opts.TSVal}})
	rs = h.takeRaw(raw)
	if len(rs) != 1 || !rs[0].hdr.IsGSO() {
		t.Fatalf("second flight written as %d packets (%+v), want 1 superpacket", len(rs), rs)
	}
	h.take()
}

func TestEngine_OffloadPureACKsAndShortSegmentsStayAlone(t *testing.T) {
	h, raw, c, iss := offloadEstablished(t)
	// Data from the app: the engine's ACK is a packet of its own, its
	// checksum partial, no GSO.
	h.send(seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK | packet.PSH, data: make([]byte, 3000),
		opts: &packet.TCPOptions{HasTS: true, TSVal: 3, TSEcr: 1}})
	ack := h.expectOne("ACK")
	if ack.ack != wrapAdd(3001) || len(ack.data) != 0 {
		t.Fatalf("ACK %+v", ack)
	}
	rs := h.takeRaw(raw)
	if len(rs) != 1 || rs[0].hdr.IsGSO() || rs[0].hdr.Flags != virtio.FlagNeedsCsum {
		t.Fatalf("pure ACK written as %+v, want one packet with a partial checksum and no GSO", rs)
	}
	// A write shorter than one segment is one plain packet with PSH.
	if _, err := c.Write([]byte("short")); err != nil {
		t.Fatal(err)
	}
	s := h.expectOne("short write")
	rs = h.takeRaw(raw)
	if len(rs) != 1 || rs[0].hdr.IsGSO() || string(s.data) != "short" || s.flags != packet.ACK|packet.PSH {
		t.Fatalf("short write: %+v as %+v", s, rs)
	}
}

// superpacket builds what the kernel's TSO hands the reader: one TCP
// header for segs segments of mss bytes, checksum partial, with its
// virtio-net header in front.
func (h *pktHarness) superpacket(s seg, mss int) []byte {
	h.t.Helper()
	b := make([]byte, virtio.HdrLen+100+len(s.data))
	if s.wnd == 0 {
		s.wnd = 65535
	}
	n, err := packet.BuildTCP(b[virtio.HdrLen:], packet.TCPHeader{Src: appAddr, Dst: dstAddr, Seq: s.seq, Ack: s.ack,
		Flags: s.flags, Window: s.wnd, Options: s.opts, PartialChecksum: true}, s.data)
	if err != nil {
		h.t.Fatal(err)
	}
	hl := n - len(s.data)
	virtio.TCPSuperpacket(false, packet.IPv4MinHeaderLen, hl-packet.IPv4MinHeaderLen, mss).Encode(b)
	return b[:virtio.HdrLen+n]
}

func TestEngine_OffloadReadsSuperpacketsWhole(t *testing.T) {
	h, _, c, iss := offloadEstablished(t)
	data := pattern(7, 20*1448)
	sp := h.superpacket(seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK | packet.PSH, data: data,
		opts: &packet.TCPOptions{HasTS: true, TSVal: 3, TSEcr: 1}}, 1448)
	if err := h.e.DeliverInboundOffload([][]byte{sp}); err != nil {
		t.Fatal(err)
	}
	// One segment to the TCB: acknowledged at once, all of it.
	ack := h.expectOne("ACK of the superpacket")
	if ack.ack != nearWrap+1+uint32(len(data)) {
		t.Fatalf("ACK %d, want %d", ack.ack-nearWrap, 1+len(data))
	}
	buf := make([]byte, len(data))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, data) {
		t.Fatalf("read %v, data intact %v", err, bytes.Equal(buf, data))
	}
	if s := h.e.Stats(); s.SuperpacketsIn != 1 || s.Malformed != 0 {
		t.Errorf("SuperpacketsIn %d, Malformed %d; want 1, 0", s.SuperpacketsIn, s.Malformed)
	}
}

func TestEngine_OffloadDropsBadPackets(t *testing.T) {
	h, _ := newOffloadHarness(t)
	c, iss := h.establishScaled()
	defer c.Close()
	h.take()
	s := seg{seq: nearWrap + 1, ack: iss + 1, flags: packet.ACK, data: make([]byte, 3000),
		opts: &packet.TCPOptions{HasTS: true, TSVal: 3, TSEcr: 1}}
	bad := map[string][]byte{}
	// A superpacket whose header says UDP segmentation.
	b := h.superpacket(s, 1448)
	b[1] = virtio.GSOUDPL4
	bad["GSO type"] = b
	// The checksum start is not the TCP header.
	b = h.superpacket(s, 1448)
	virtio.Hdr{Flags: virtio.FlagNeedsCsum, GSOType: virtio.GSOTCPv4, GSOSize: 1448, CsumStart: 24, CsumOffset: 16}.Encode(b)
	bad["checksum start"] = b
	// No flag vouches for the partial checksum: it is verified, and wrong.
	b = h.superpacket(s, 1448)
	clear(b[:virtio.HdrLen])
	bad["unverified partial checksum"] = b
	bad["shorter than the header"] = []byte{1, 2, 3}
	for name, pkt := range bad {
		before := h.e.Stats().Malformed
		if err := h.e.DeliverInboundOffload([][]byte{pkt}); err != nil {
			t.Fatal(err)
		}
		if got := h.e.Stats().Malformed; got != before+1 {
			t.Errorf("%s: Malformed %d → %d, want one more", name, before, got)
		}
	}
	h.expectNone("after bad packets")
	// A plain packet with a full checksum and a zero header is taken.
	good := append(make([]byte, virtio.HdrLen), h.build(s)...)
	if err := h.e.DeliverInboundOffload([][]byte{good}); err != nil {
		t.Fatal(err)
	}
	if a := h.expectOne("ACK of a plain packet"); a.ack != wrapAdd(3001) {
		t.Fatalf("ACK %d", a.ack-nearWrap)
	}
}

// wrapAdd is nearWrap + n in sequence space.
func wrapAdd(n uint32) uint32 { v := uint32(nearWrap); return v + n }

// fuzzOffloadWriter checks every packet the engine writes on the
// superpacket path as the kernel would take it (kernelSegments).
type fuzzOffloadWriter struct{ t *testing.T }

func (w *fuzzOffloadWriter) WritePackets(bufs [][]byte, offset int) (int, error) {
	return len(bufs), nil
}
func (w *fuzzOffloadWriter) Offloads() bool { return true }
func (w *fuzzOffloadWriter) WritePacketsOffload(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		kernelSegments(w.t, virtio.Decode(b[offset-virtio.HdrLen:]), b[offset:])
	}
	return len(bufs), nil
}

// FuzzEngineDeliverInboundOffload: any bytes behind any virtio-net header
// are taken or counted as malformed, never a panic, and what the engine
// answers is a packet the kernel takes.
func FuzzEngineDeliverInboundOffload(f *testing.F) {
	build := func(flags packet.TCPFlags, data []byte, gso int) []byte {
		b := make([]byte, virtio.HdrLen+60+len(data))
		n, err := packet.BuildTCP(b[virtio.HdrLen:], packet.TCPHeader{Src: appAddr, Dst: dstAddr, Seq: 1, Ack: 0,
			Flags: flags, Window: 65535, PartialChecksum: true}, data)
		if err != nil {
			f.Fatal(err)
		}
		virtio.TCPSuperpacket(false, packet.IPv4MinHeaderLen, n-len(data)-packet.IPv4MinHeaderLen, gso).Encode(b)
		return b[:virtio.HdrLen+n]
	}
	f.Add(build(packet.SYN, nil, 0))
	f.Add(build(packet.ACK, make([]byte, 3000), 1000))
	f.Add(build(packet.ACK|packet.FIN, make([]byte, 100), 0))
	w := &fuzzOffloadWriter{}
	opts := DefaultOptions()
	opts.Clock = clock.NewManual(pktT0)
	e, err := New(w, chanHandler{make(chan stack.Request, 1<<16)}, opts)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { e.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		w.t = t
		before := e.Stats()
		if err := e.DeliverInboundOffload([][]byte{b}); err != nil {
			t.Fatal(err)
		}
		if after := e.Stats(); after.PacketsIn != before.PacketsIn+1 {
			t.Fatalf("PacketsIn %d → %d", before.PacketsIn, after.PacketsIn)
		}
	})
}
