package tcp

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// shardWriter records which flows a shard wrote for.
type shardWriter struct {
	mu    sync.Mutex
	flows map[netip.AddrPort][]packet.TCPFlags // by the app's address
}

func (w *shardWriter) WritePackets(bufs [][]byte, offset int) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range bufs {
		p, err := packet.ParseIP(b[offset:])
		if err != nil || p.Proto != packet.ProtoTCP {
			continue
		}
		w.flows[p.DstAddrPort()] = append(w.flows[p.DstAddrPort()], p.TCP().Flags())
	}
	return len(bufs), nil
}

func (w *shardWriter) get(a netip.AddrPort) []packet.TCPFlags {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flows[a]
}

type acceptAll struct{}

func (acceptAll) HandleTCP(ctx context.Context, r stack.Request) {
	if _, err := r.Accept(ctx); err == nil {
		<-ctx.Done()
	}
}
func (acceptAll) HandleUDP(ctx context.Context, c stack.PacketConn) { c.Close() }

// TestShards_EachFlowStaysOnOneShard: SYNs of 32 flows spread over both
// shards, and every later segment of a flow is answered by the shard
// that answered its SYN; Stats sums the shards.
func TestShards_EachFlowStaysOnOneShard(t *testing.T) {
	ws := []*shardWriter{{flows: map[netip.AddrPort][]packet.TCPFlags{}}, {flows: map[netip.AddrPort][]packet.TCPFlags{}}}
	opts := DefaultOptions()
	opts.Clock = clock.NewManual(pktT0)
	s, err := NewShards([]stack.PacketWriter{ws[0], ws[1]}, acceptAll{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := &pktHarness{t: t}
	const flows = 32
	app := func(i int) netip.AddrPort { return netip.AddrPortFrom(appAddr.Addr(), uint16(20000+i)) }
	var syns [][]byte
	for i := range flows {
		syns = append(syns, h.build(seg{src: app(i), seq: 1000, flags: packet.SYN}))
	}
	if err := s.DeliverInbound(syns); err != nil {
		t.Fatal(err)
	}
	owner := make([]int, flows)
	var isn [flows]uint32
	deadline := time.Now().Add(5 * time.Second)
	for i := range flows {
		for {
			a, b := ws[0].get(app(i)), ws[1].get(app(i))
			if len(a)+len(b) > 0 {
				if len(a) > 0 && len(b) > 0 {
					t.Fatalf("flow %d answered by both shards", i)
				}
				if len(b) > 0 {
					owner[i] = 1
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no SYN-ACK for flow %d", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	per := [2]int{}
	for _, o := range owner {
		per[o]++
	}
	if per[0] == 0 || per[1] == 0 {
		t.Fatalf("flows per shard %v: not spread", per)
	}
	// The handshakes complete with data: each answered by its owner.
	for i := range flows {
		isn[i] = s.shards[owner[i]].flowISS(t, stack.FlowID{Src: app(i), Dst: dstAddr})
	}
	var rest [][]byte
	for i := range flows {
		rest = append(rest, h.build(seg{src: app(i), seq: 1001, ack: isn[i] + 1, flags: packet.ACK | packet.PSH, data: []byte("x")}))
	}
	if err := s.DeliverInbound(rest); err != nil {
		t.Fatal(err)
	}
	for i := range flows {
		if got := len(ws[1-owner[i]].get(app(i))); got != 0 {
			t.Errorf("flow %d: %d packets from the other shard", i, got)
		}
	}
	if st := s.Stats(); st.States[Established.String()] != flows || st.PacketsIn != 2*flows || st.SYNs != flows {
		t.Fatalf("summed stats: established %d, packets in %d, SYNs %d; want %d, %d, %d",
			st.States[Established.String()], st.PacketsIn, st.SYNs, flows, 2*flows, flows)
	}
}

// flowISS waits for id's TCB and returns its ISS.
func (e *Engine) flowISS(t *testing.T, id stack.FlowID) uint32 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.mu.RLock()
		f := e.flows[id]
		e.mu.RUnlock()
		if f != nil {
			f.mu.Lock()
			tcb := f.tcb
			var iss Seq
			if tcb != nil {
				iss = tcb.iss
			}
			f.mu.Unlock()
			if tcb != nil {
				return uint32(iss)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TCB for %v", id)
		}
		time.Sleep(time.Millisecond)
	}
}

// The datagrams of one app socket go to one shard whatever their
// destination; TCP flows from it spread by destination too.
func TestShards_UDPFromOneSocketStaysOnOneShard(t *testing.T) {
	opts := DefaultOptions()
	opts.Clock = clock.NewManual(pktT0)
	w := &shardWriter{flows: map[netip.AddrPort][]packet.TCPFlags{}}
	s, err := NewShards([]stack.PacketWriter{w, w, w, w}, acceptAll{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	udpTo := func(dst netip.AddrPort) packet.Packet {
		b := make([]byte, 100)
		n, err := packet.BuildUDP(b, packet.UDPHeader{Src: appAddr, Dst: dst}, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := packet.ParseIP(b[:n])
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	h := &pktHarness{t: t}
	first := s.shardOf(udpTo(dstAddr))
	tcpShards := map[int]bool{}
	for i := range 64 {
		dst := netip.AddrPortFrom(dstAddr.Addr(), uint16(1000+i))
		if k := s.shardOf(udpTo(dst)); k != first {
			t.Fatalf("datagram to %v on shard %d, the first on %d", dst, k, first)
		}
		p, err := packet.ParseIP(h.build(seg{dst: dst, flags: packet.SYN}))
		if err != nil {
			t.Fatal(err)
		}
		tcpShards[s.shardOf(p)] = true
	}
	if len(tcpShards) < 2 {
		t.Errorf("TCP flows to 64 ports on %d shard(s) of 4", len(tcpShards))
	}
}
