package tcp

import (
	"errors"
	"hash/maphash"
	"net/netip"
	"reflect"
	"sync"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// Shards is the own engine on several cores: one Engine per shard, each
// with its own flow table, timers and output batches, and each inbound
// packet handed to the shard its flow hashes to. Shards share no lock on
// the per-packet path: a packet takes only its shard's. One flow always
// hashes to one shard, whichever TUN queue it arrives on (the kernel may
// move a flow between queues), so a shard sees every segment of its
// flows.
type Shards struct {
	shards  []*Engine
	seed    maphash.Seed
	scratch sync.Pool // *[][]packet.Packet, one list per shard
}

var _ stack.OffloadStack = (*Shards)(nil)

// NewShards builds one engine per writer (writer i for shard i, typically
// TUN queue i), all handing their flows to h. The backlogs and the
// TIME-WAIT bound of opts are for all shards together: each shard gets
// its share.
func NewShards(ws []stack.PacketWriter, h stack.Handler, opts Options) (*Shards, error) {
	if len(ws) == 0 {
		return nil, errors.New("tcp: no shard")
	}
	n := len(ws)
	per := opts
	share := func(v, def int) int {
		if v <= 0 {
			v = def
		}
		return max(1, (v+n-1)/n)
	}
	per.SynBacklog = share(opts.SynBacklog, 1024)
	per.PendingBacklog = share(opts.PendingBacklog, 1024)
	per.MaxTimeWait = share(opts.MaxTimeWait, DefaultMaxTimeWait)
	s := &Shards{seed: maphash.MakeSeed()}
	for _, w := range ws {
		e, err := New(w, h, per)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.shards = append(s.shards, e)
	}
	s.scratch.New = func() any {
		lists := make([][]packet.Packet, n)
		return &lists
	}
	return s, nil
}

// Len is the number of shards.
func (s *Shards) Len() int { return len(s.shards) }

// DeliverInbound implements stack.Stack.
func (s *Shards) DeliverInbound(pkts [][]byte) error { return s.deliver(pkts, false) }

// DeliverInboundOffload implements stack.OffloadStack.
func (s *Shards) DeliverInboundOffload(pkts [][]byte) error { return s.deliver(pkts, true) }

// deliver parses pkts once, sorts them by shard keeping their order within
// each, and hands each shard its own.
func (s *Shards) deliver(pkts [][]byte, vnet bool) error {
	e0 := s.shards[0]
	if len(s.shards) == 1 {
		return e0.deliver(pkts, vnet)
	}
	lp := s.scratch.Get().(*[][]packet.Packet)
	lists := *lp
	for _, raw := range pkts {
		p, err := e0.parse(raw, vnet)
		if err != nil {
			e0.ec.packetsIn.Add(1)
			e0.dropMalformed(err)
			continue
		}
		k := s.shardOf(p)
		lists[k] = append(lists[k], p)
	}
	var first error
	for k, ps := range lists {
		if len(ps) == 0 {
			continue
		}
		if err := s.shards[k].deliverParsed(ps); err != nil && first == nil {
			first = err
		}
		clear(ps) // the packets alias the caller's buffers
		lists[k] = ps[:0]
	}
	s.scratch.Put(lp)
	return first
}

// shardOf is the shard of p's flow: a keyed hash of its addresses and
// ports for TCP; of the app's address and port alone for UDP, so that
// every datagram of one app socket, whatever its destination, meets the
// same UDP table (one mapping per app socket, as endpoint-independent
// NAT wants); of the addresses for ICMP.
func (s *Shards) shardOf(p packet.Packet) int {
	id := stack.FlowID{Src: p.SrcAddrPort(), Dst: p.DstAddrPort()}
	if p.Proto == packet.ProtoUDP {
		id.Dst = netip.AddrPort{}
	}
	return int(maphash.Comparable(s.seed, id) % uint64(len(s.shards)))
}

// Close closes every shard.
func (s *Shards) Close() error {
	var errs []error
	for _, e := range s.shards {
		errs = append(errs, e.Close())
	}
	return errors.Join(errs...)
}

// Stats returns the shards' counters and states, summed.
func (s *Shards) Stats() Stats {
	var sum Stats
	for _, e := range s.shards {
		st := e.Stats()
		if sum.States == nil {
			sum = st
			continue
		}
		for k, v := range st.States {
			sum.States[k] += v
		}
		sum.Pending += st.Pending
		a, b := reflect.ValueOf(&sum).Elem(), reflect.ValueOf(st)
		for i := range a.NumField() {
			if f := a.Field(i); f.Kind() == reflect.Uint64 {
				f.SetUint(f.Uint() + b.Field(i).Uint())
			}
		}
	}
	return sum
}
