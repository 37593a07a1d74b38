package tcp

import (
	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
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
	// emitFn is b.emit bound once, so handing it to TCB.Output does not
	// allocate a method value per call.
	emitFn func(*Segment)
}

func newOutBatch(e *Engine) *outBatch {
	b := &outBatch{e: e, pkts: make([][]byte, 0, maxBatch)}
	b.emitFn = b.emit
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
}

// emit serialises a segment of flow b.cur, from the address the app
// connected to back to the app.
func (b *outBatch) emit(seg *Segment) {
	buf := b.next()
	n, err := packet.BuildTCP(buf[stack.Headroom:], packet.TCPHeader{
		Src: b.cur.Dst, Dst: b.cur.Src,
		Seq: uint32(seg.Seq), Ack: uint32(seg.Ack),
		Flags: seg.Flags, Window: seg.Wnd, Options: &seg.Opts,
	}, seg.Payload)
	if err != nil {
		b.e.ec.buildErrors.Add(1)
		return
	}
	b.commit(n)
}

// flush writes the batch to the PacketWriter.
func (b *outBatch) flush() {
	if len(b.pkts) == 0 {
		return
	}
	n, err := b.e.w.WritePackets(b.pkts, stack.Headroom)
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
