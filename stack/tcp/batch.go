package tcp

import (
	"net/netip"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/internal/virtio"
	"github.com/tungate/tungate/stack"
)

const (
	// maxBatch is how many packets one write to the TUN carries at most.
	maxBatch = 64
	// batchBufSize leaves room for the TUN to coalesce the following
	// segments of a flow into one buffer (its GRO needs the capacity).
	batchBufSize = stack.Headroom + 65535
)

// outBatch collects the packets one call into the engine emits, to hand
// them to the PacketWriter in one batch. Batches are pooled: a goroutine
// takes one, fills it, flushes it and puts it back.
type outBatch struct {
	e    *Engine
	bufs [][]byte // backing buffers, allocated on first use
	pkts [][]byte // the packets of this batch, slices of bufs
	cur  stack.FlowID
	// in holds the inbound segment being processed (see inputTCP).
	in Segment
	// coalesce is set while a batch read from the TUN is processed: the
	// output of in-order segments is then produced once per flow at the
	// end of the batch (see deferOutput); deferred lists those flows.
	coalesce bool
	deferred []*flow
	// input is set for the whole of a batch read from the TUN; notifyQ
	// lists the flows whose SetNotifyAfter function runs once it is
	// written (see Engine.inputBatch).
	input   bool
	notifyQ []*flow
	inBytes int // payload bytes of the batch read from the TUN
	// emitFn is b.emit bound once, so handing it to TCB.Output does not
	// allocate a method value per call.
	emitFn func(*Segment)

	// offload is the superpacket path (the writer is a
	// stack.OffloadWriter): TCP packets get a partial checksum, and
	// consecutive segments of one flow are merged into one superpacket
	// (see merge). meta describes each packet of pkts, sp the last one
	// while segments may still be merged into it.
	offload bool
	meta    []pktMeta
	sp      openSuperpacket
}

// pktMeta describes one packet of a batch on the superpacket path.
type pktMeta struct {
	tcp  bool   // a TCP packet built by emit, its checksum partial
	segs uint16 // segments merged into it
	gso  uint16 // payload bytes of each but the last segment
}

// openSuperpacket is what a segment must continue to be merged into the
// batch's last packet: the same flow, the next sequence number, and the
// same acknowledgment, window and options, as the kernel's GRO requires
// of the segments it merges.
type openSuperpacket struct {
	ok    bool
	flow  stack.FlowID
	next  Seq
	ack   Seq
	wnd   uint16
	ihl   int // IP header length
	opts  packet.TCPOptions
	limit int // the largest packet the buffer and the IP length field allow
}

func newOutBatch(e *Engine) *outBatch {
	b := &outBatch{e: e, pkts: make([][]byte, 0, maxBatch)}
	b.emitFn = b.emit
	if e.ow != nil {
		b.offload = true
		b.meta = make([]pktMeta, 0, maxBatch)
	}
	return b
}

func (e *Engine) getBatch() *outBatch { return e.batches.Get().(*outBatch) }

// putBatch flushes b and returns it to the pool.
func (e *Engine) putBatch(b *outBatch) {
	b.flush()
	e.batches.Put(b)
}

// next returns the buffer for the next packet, flushing a full batch.
func (b *outBatch) next() []byte {
	if len(b.pkts) == maxBatch {
		b.flush()
	}
	i := len(b.pkts)
	if i == len(b.bufs) {
		b.bufs = append(b.bufs, make([]byte, batchBufSize))
	}
	return b.bufs[i]
}

// commit adds the packet of n bytes just built in next()'s buffer.
func (b *outBatch) commit(n int) {
	i := len(b.pkts)
	b.pkts = append(b.pkts, b.bufs[i][:stack.Headroom+n])
	if b.offload {
		b.meta = append(b.meta, pktMeta{})
		b.sp.ok = false
	}
}

// emit serialises a segment of flow b.cur, from the address the app
// connected to back to the app. On the superpacket path it extends the
// last packet instead when the segment continues it.
func (b *outBatch) emit(seg *Segment) {
	if b.offload && b.merge(seg) {
		return
	}
	buf := b.next()
	n, err := packet.BuildTCP(buf[stack.Headroom:], packet.TCPHeader{
		Src: b.cur.Dst, Dst: b.cur.Src,
		Seq: uint32(seg.Seq), Ack: uint32(seg.Ack),
		Flags: seg.Flags, Window: seg.Wnd, Options: &seg.Opts,
		PartialChecksum: b.offload,
	}, seg.Payload)
	if err != nil {
		b.e.ec.buildErrors.Add(1)
		return
	}
	b.commit(n)
	if !b.offload {
		return
	}
	b.meta[len(b.meta)-1] = pktMeta{tcp: true, segs: 1, gso: uint16(len(seg.Payload))}
	// A superpacket starts with a full data segment that only
	// acknowledges: the kernel puts PSH and FIN on its last segment only
	// and has no place for SYN, RST or URG.
	if len(seg.Payload) > 0 && seg.Flags == packet.ACK {
		ihl := packet.IPv4MinHeaderLen
		if b.cur.Src.Addr().Is6() {
			ihl = packet.IPv6HeaderLen
		}
		b.sp = openSuperpacket{ok: true, flow: b.cur, next: seg.Seq.Add(uint32(len(seg.Payload))),
			ack: seg.Ack, wnd: seg.Wnd, ihl: ihl, opts: seg.Opts,
			limit: min(len(buf), stack.Headroom+ihl+maxSuperpacketIP(ihl))}
	}
}

// maxSuperpacketIP is the largest superpacket, IP header included, that
// the IP length field can describe.
func maxSuperpacketIP(ihl int) int {
	if ihl == packet.IPv6HeaderLen {
		return 0xffff // the payload length field excludes the fixed header
	}
	return 0xffff - ihl
}

// merge appends seg's payload to the batch's last packet when seg
// continues it (see openSuperpacket) and is no longer than its segments,
// and reports whether it did. A shorter segment, or one with PSH or FIN,
// ends the superpacket.
func (b *outBatch) merge(seg *Segment) bool {
	sp := &b.sp
	n := len(seg.Payload)
	if !sp.ok || n == 0 || sp.flow != b.cur || seg.Seq != sp.next || seg.Ack != sp.ack || seg.Wnd != sp.wnd ||
		seg.Flags&^(packet.PSH|packet.FIN) != packet.ACK || seg.Opts != sp.opts {
		return false
	}
	i := len(b.pkts) - 1
	m := &b.meta[i]
	end := len(b.pkts[i])
	if n > int(m.gso) || end+n > sp.limit {
		return false
	}
	pkt := b.bufs[i][:end+n]
	copy(pkt[end:], seg.Payload)
	b.pkts[i] = pkt
	m.segs++
	sp.next = sp.next.Add(uint32(n))
	if f := seg.Flags & (packet.PSH | packet.FIN); f != 0 {
		t := packet.TCP(pkt[stack.Headroom+sp.ihl:])
		t.SetFlags(t.Flags() | f)
		sp.ok = false
	}
	if n < int(m.gso) {
		sp.ok = false
	}
	return true
}

// finishOffload completes every packet of the batch for the superpacket
// path: the IP length, IPv4 header checksum and TCP pseudo-header sum of
// merged packets, and each packet's virtio-net header in its headroom.
func (b *outBatch) finishOffload() {
	for i, m := range b.meta {
		buf := b.pkts[i]
		hdr := buf[stack.Headroom-virtio.HdrLen : stack.Headroom]
		if !m.tcp {
			clear(hdr) // complete as built
			continue
		}
		pkt := buf[stack.Headroom:]
		v6 := pkt[0]>>4 == 6
		ihl := packet.IPv4MinHeaderLen
		if v6 {
			ihl = packet.IPv6HeaderLen
		}
		t := packet.TCP(pkt[ihl:])
		gso := 0
		if m.segs > 1 {
			gso = int(m.gso)
			var src, dst netip.Addr
			if v6 {
				h := packet.IPv6(pkt)
				h.SetPayloadLen(len(pkt) - ihl)
				src, dst = h.Src(), h.Dst()
			} else {
				h := packet.IPv4(pkt)
				h.SetTotalLen(len(pkt))
				h.SetChecksum(0)
				h.SetChecksum(h.ComputeChecksum())
				src, dst = h.Src(), h.Dst()
			}
			t.SetChecksum(packet.PseudoHeaderChecksum(packet.ProtoTCP, src, dst, len(t)))
			b.e.ec.superpacketsOut.Add(1)
		}
		virtio.TCPSuperpacket(v6, ihl, t.DataOffset(), gso).Encode(hdr)
	}
}

// flush writes the batch to the PacketWriter.
func (b *outBatch) flush() {
	if len(b.pkts) == 0 {
		return
	}
	var n int
	var err error
	if b.offload {
		b.finishOffload()
		n, err = b.e.ow.WritePacketsOffload(b.pkts, stack.Headroom)
		b.meta, b.sp.ok = b.meta[:0], false
	} else {
		n, err = b.e.w.WritePackets(b.pkts, stack.Headroom)
	}
	b.e.ec.packetsOut.Add(uint64(n))
	if err != nil {
		b.e.ec.writeErrors.Add(1)
		b.e.log.Debug("tcp: packet write failed", "err", err)
	}
	b.pkts = b.pkts[:0]
}

// deferOutput postpones f's output to the end of the batch read from the
// TUN. The TUN hands over what the kernel sent as one GSO burst, so this
// is what receive offload does in a kernel: in-order segments of one
// burst are acknowledged together (a stretch ACK), and ACKs arriving
// together release new data together, at a fraction of the writes. Out-of-
// order arrivals are not deferred: the sender needs every duplicate ACK
// and SACK block (RFC 5681 §4.2). f.mu is held.
func (b *outBatch) deferOutput(f *flow) {
	if !f.deferred {
		f.deferred = true
		b.deferred = append(b.deferred, f)
	}
}

// runDeferred produces the postponed output of every deferred flow.
func (b *outBatch) runDeferred(now clock.Time) {
	for i, f := range b.deferred {
		f.mu.Lock()
		f.deferred = false
		if !f.gone {
			f.afterLocked(now, b)
		}
		f.mu.Unlock()
		b.deferred[i] = nil
	}
	b.deferred = b.deferred[:0]
}
