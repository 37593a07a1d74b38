// Package udp terminates UDP flows for a stack that parses IP packets
// itself (the own engine in stack/tcp): it demultiplexes the app's
// datagrams by 4-tuple into stack.PacketConns, hands each new flow to the
// stack.Handler, and turns the handler's replies into IP packets for the
// stack.PacketWriter. The proxy serves these flows exactly as it serves
// the gVisor stack's.
//
// UDP has no connection: a flow is a 4-tuple seen for the first time, and
// it lasts until its PacketConn is closed. Ending idle flows is the
// handler's job (the proxy closes a session after its UDP idle timeout).
package udp

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// Defaults for zero Options fields.
const (
	// DefaultQueueLen is the number of datagrams a flow buffers for Read:
	// 256 absorbs a burst of a fast sender (a QUIC flight, a DNS
	// resolver's parallel queries) while the handler relays upstream.
	DefaultQueueLen = 256
	// DefaultMaxFlows bounds the flow table. A flow lives at least as long
	// as the proxy's UDP idle timeout (60 s), so this admits about 270 new
	// flows a second sustained, well above a desktop's DNS rate.
	DefaultMaxFlows = 16384
)

// Options configure a Table. Zero fields take the defaults.
type Options struct {
	// QueueLen is the number of datagrams a flow buffers until its
	// PacketConn reads them. When the queue is full, new datagrams are
	// dropped (the newest, as a kernel socket with a full receive buffer
	// does) and counted in Stats.QueueDrops.
	QueueLen int
	// MaxFlows bounds the number of open flows; a datagram that would
	// start another one is dropped and counted in Stats.FlowLimitDrops.
	MaxFlows int
	// Logger receives per-flow debug logs; nil discards them.
	Logger *slog.Logger
	// Clock runs the PacketConns' read and write deadlines; nil means
	// clock.Real().
	Clock clock.Clock
}

// Stats are a Table's counters.
type Stats struct {
	Flows          uint64 // flows created
	Active         int64  // flows open now
	DatagramsIn    uint64 // datagrams queued for a flow's Read
	BytesIn        uint64 // their payload bytes
	DatagramsOut   uint64 // datagrams written back to the app as packets
	BytesOut       uint64 // their payload bytes
	QueueDrops     uint64 // datagrams dropped because their flow's queue was full
	FlowLimitDrops uint64 // datagrams dropped because MaxFlows flows were open
	ClosedDrops    uint64 // datagrams dropped because their flow or the Table closed, queued ones included
	WriteErrors    uint64 // Writes the PacketWriter failed
	Refused        uint64 // flows refused with an ICMP port unreachable
	Unreachable    uint64 // ICMP port unreachables sent for an upstream's (PortUnreachable)
}

// counters are the live Stats.
type counters struct {
	flows, datagramsIn, bytesIn, datagramsOut, bytesOut  atomic.Uint64
	queueDrops, flowLimitDrops, closedDrops, writeErrors atomic.Uint64
	refused, unreachable                                 atomic.Uint64
	active                                               atomic.Int64
}

// Table is the set of UDP flows of one stack. Its methods are safe for
// concurrent use.
type Table struct {
	w        stack.PacketWriter
	h        stack.Handler
	queueLen int
	maxFlows int
	log      *slog.Logger
	clk      clock.Clock

	ctx    context.Context // handed to every HandleUDP; cancelled by Close
	cancel context.CancelFunc

	// mu guards flows and closed.
	mu     sync.Mutex
	flows  map[stack.FlowID]*PacketConn
	closed bool

	wg    sync.WaitGroup // the handler goroutines
	stats counters
	bufs  bufPools
}

// New returns a Table that hands new flows to h and writes replies to w.
func New(w stack.PacketWriter, h stack.Handler, opts Options) *Table {
	t := &Table{
		w:        w,
		h:        h,
		queueLen: opts.QueueLen,
		maxFlows: opts.MaxFlows,
		log:      opts.Logger,
		clk:      opts.Clock,
		flows:    make(map[stack.FlowID]*PacketConn),
	}
	if t.queueLen <= 0 {
		t.queueLen = DefaultQueueLen
	}
	if t.maxFlows <= 0 {
		t.maxFlows = DefaultMaxFlows
	}
	if t.clk == nil {
		t.clk = clock.Real()
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Deliver hands the Table one datagram the app sent: p is a UDP packet
// validated by packet.ParseIP (other protocols are ignored). The payload is
// copied, so the caller may reuse p's buffer when Deliver returns. A
// datagram on a new 4-tuple starts a flow, whose PacketConn is passed,
// with the datagram readable, to Handler.HandleUDP on a goroutine of the
// Table. Deliver never blocks on a flow: datagrams it cannot queue are
// dropped and counted (see Stats).
func (t *Table) Deliver(p packet.Packet) {
	if p.Proto != packet.ProtoUDP {
		return
	}
	id := stack.FlowID{Src: p.SrcAddrPort(), Dst: p.DstAddrPort()}
	c, isNew := t.lookup(id)
	if c == nil {
		return
	}
	c.push(p.Payload)
	if isNew {
		go t.serve(c)
	}
}

// lookup returns the flow of id, creating it when there is none; nil when
// the datagram is to be dropped.
func (t *Table) lookup(id stack.FlowID) (c *PacketConn, isNew bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.flows[id]; c != nil {
		return c, false
	}
	if t.closed {
		t.stats.closedDrops.Add(1)
		return nil, false
	}
	if len(t.flows) >= t.maxFlows {
		t.stats.flowLimitDrops.Add(1)
		t.log.Debug("udp: flow limit reached, datagram dropped", "flow", id, "max_flows", t.maxFlows)
		return nil, false
	}
	c = newPacketConn(t, id)
	t.flows[id] = c
	t.wg.Add(1) // under mu, so that Close's Wait comes after it
	t.stats.flows.Add(1)
	t.stats.active.Add(1)
	t.log.Debug("udp: new flow", "flow", id)
	return c, true
}

// serve runs the handler of one flow and closes the flow afterwards, in
// case the handler did not.
func (t *Table) serve(c *PacketConn) {
	defer t.wg.Done()
	defer c.Close()
	t.h.HandleUDP(t.ctx, c)
}

// remove takes c out of the table, so that the next datagram on its
// 4-tuple starts a new flow.
func (t *Table) remove(c *PacketConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.flows[c.id] == c {
		delete(t.flows, c.id)
	}
}

// Close closes every flow (their pending and later Reads and Writes fail
// with net.ErrClosed), cancels the handlers' context and waits until every
// HandleUDP call has returned. Datagrams delivered afterwards are dropped.
// Close is idempotent and returns nil.
func (t *Table) Close() error {
	t.mu.Lock()
	t.closed = true
	conns := make([]*PacketConn, 0, len(t.flows))
	for _, c := range t.flows {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	t.cancel()
	t.wg.Wait()
	return nil
}

// Stats returns a snapshot of the counters.
func (t *Table) Stats() Stats {
	s := &t.stats
	return Stats{
		Flows:          s.flows.Load(),
		Active:         s.active.Load(),
		DatagramsIn:    s.datagramsIn.Load(),
		BytesIn:        s.bytesIn.Load(),
		DatagramsOut:   s.datagramsOut.Load(),
		BytesOut:       s.bytesOut.Load(),
		QueueDrops:     s.queueDrops.Load(),
		FlowLimitDrops: s.flowLimitDrops.Load(),
		ClosedDrops:    s.closedDrops.Load(),
		WriteErrors:    s.writeErrors.Load(),
		Refused:        s.refused.Load(),
		Unreachable:    s.unreachable.Load(),
	}
}
