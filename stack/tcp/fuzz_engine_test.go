package tcp

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// FuzzEngineInput runs runEngineFuzz on a whole Engine; FuzzTCBInput runs
// runTCBFuzz, further down, on a bare TCB.

// fzEngine drives an Engine on manual time for FuzzEngineInput.
type fzEngine struct {
	t     *testing.T
	e     *Engine
	tuple [2]stack.FlowID
	peer  [2]*fzPeer
	flow  [2]*flow // the flow each peer model follows
	// old is the model of a flow's previous incarnation while a step
	// replaces it: the new one sends nothing but SYN-ACKs in that step (a
	// SYN ends a batch), and the old one's output of the same batch may be
	// written before or after them.
	old  [2]*fzPeer
	rbuf []byte
	pkt  []byte
	hist []fzStep
	prev Stats
	held [][]byte // segments waiting to be delivered in one batch

	clk      *clock.Manual
	mu       sync.Mutex // guards out, captured, synAcks
	out      [][]byte
	captured uint64
	synAcks  [2]int
}

type fzWriter struct{ h *fzEngine }

func (w fzWriter) WritePackets(bufs [][]byte, offset int) (int, error) {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		h.out = append(h.out, p)
		h.captured++
		if len(p) > 40 {
			if q, err := packet.ParseIP(p); err == nil && q.Proto == packet.ProtoTCP &&
				q.TCP().Flags()&(packet.SYN|packet.ACK) == packet.SYN|packet.ACK {
				h.synAcks[h.index(q.DstAddrPort())]++
			}
		}
	}
	return len(bufs), nil
}

// fzHandler accepts every request; Accept returns once the handshake
// completed or failed.
type fzHandler struct{}

func (fzHandler) HandleTCP(ctx context.Context, r stack.Request)    { r.Accept(ctx) }
func (fzHandler) HandleUDP(ctx context.Context, c stack.PacketConn) { c.Close() }

// index returns the flow whose app address is src (1 for the second).
func (h *fzEngine) index(src netip.AddrPort) int {
	if src == h.tuple[1].Src {
		return 1
	}
	return 0
}

func (h *fzEngine) fail(format string, args ...any) {
	h.t.Helper()
	var b strings.Builder
	for i, st := range h.hist {
		fmt.Fprintf(&b, "\n  %3d %v", i, st)
	}
	h.t.Fatalf("%s\nsteps:%s", fmt.Sprintf(format, args...), b.String())
}

func runEngineFuzz(t *testing.T, data []byte) { engineFuzz(t, data) }

// engineFuzz runs one input and returns the harness for inspection.
func engineFuzz(t *testing.T, data []byte) *fzEngine {
	ignore := goleak.IgnoreCurrent()
	r := fzReader{b: data}
	hdr0, hdr1 := r.u8(), r.u8()
	h := &fzEngine{t: t, clk: clock.NewManual(clock.Time(1_800_000_000 * time.Second)), rbuf: make([]byte, 64<<10), pkt: make([]byte, 16<<10)}
	h.tuple[0] = stack.FlowID{Src: netip.MustParseAddrPort("198.18.0.1:40000"), Dst: netip.MustParseAddrPort("198.19.0.2:80")}
	h.tuple[1] = stack.FlowID{Src: netip.MustParseAddrPort("[2001:2::1]:40001"), Dst: netip.MustParseAddrPort("[2001:2::2]:443")}
	h.peer[0] = &fzPeer{synOpt: fzSynOpts(hdr0&15, 100), tsval: 100}
	h.peer[1] = &fzPeer{v6: true, synOpt: fzSynOpts(hdr0>>4, 5000), tsval: 5000}
	opts := DefaultOptions()
	opts.Clock = h.clk
	fzConfig(&opts.TCB, hdr1)
	e, err := New(fzWriter{h}, fzHandler{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	defer e.Close() // on failure; a second Close is a no-op

	h.open(0, hdr1)
	if hdr1&0x01 != 0 {
		h.open(1, hdr1)
	}
	for step := 0; step < fzMaxSteps && !r.done(); step++ {
		st := fzDecode(&r)
		h.hist = append(h.hist, st)
		h.apply(&st)
	}
	if len(h.held) > 0 {
		h.apply(&fzStep{kind: fzWait, flush: true})
	}

	e.Close()
	h.collect()
	st := e.Stats()
	if len(st.States) != 0 || st.Pending != 0 || e.pending != 0 || e.synRcvd != 0 {
		h.fail("after Close: states %v, pending %d/%d, SYN-RECEIVED %d", st.States, st.Pending, e.pending, e.synRcvd)
	}
	if err := goleak.Find(ignore); err != nil {
		h.fail("goroutines left after Close: %v", err)
	}
	return h
}

// open runs the handshake of flow i: SYN, the handler's Accept, SYN-ACK,
// third ACK (with data when hdr1 asks for it).
func (h *fzEngine) open(i int, hdr1 byte) {
	p := h.peer[i]
	isn := [...]Seq{0xffff_fc00, 0x7fff_fff0}[i]
	syn := Segment{Seq: isn, Flags: packet.SYN, Wnd: 65535, Opts: p.synOpt}
	before := h.synAckCount(i)
	h.send(i, &syn, nil, false, false)
	h.settle(i, before)
	h.collect()
	ack := fzStep{kind: fzQuick, flow: i}
	if hdr1&0x40 != 0 {
		ack.plen = 100
		ack.bits = 0x02
	}
	h.hist = append(h.hist, ack)
	h.apply(&ack)
}

// apply runs one record and checks everything afterwards.
func (h *fzEngine) apply(st *fzStep) {
	i := st.flow
	p := h.peer[i]
	before := [2]int{h.synAckCount(0), h.synAckCount(1)}
	switch st.kind {
	case fzSeg, fzQuick:
		seg, raw := p.segment(st)
		h.send(i, &seg, raw, st.kind == fzQuick, st.hold)
	case fzApp:
		h.app(i, st)
	case fzWait:
		if st.flush {
			h.flushHeld()
		}
	}
	h.settle(0, before[0])
	h.settle(1, before[1])
	if st.adv > 0 {
		for _, p := range h.peer {
			p.tsval += uint32(st.adv / time.Millisecond)
		}
		h.clk.Advance(st.adv)
		now := h.clk.Now()
		if next := h.e.timers.next(); next != 0 && !next.After(now) {
			h.fail("after advancing to %v the next deadline is %v: its timer did not run", now, next)
		}
		// The engine's one timer must be pending for the earliest
		// deadline or before: a later one, or none, is a lost wake-up.
		if next := h.e.timers.next(); next != 0 {
			if at, ok := h.clk.Next(); !ok || at.After(next) {
				h.fail("the earliest deadline is %v but the clock's next timer is %v (pending %v): it would never run", next, at, ok)
			}
		}
	}
	h.collect()
	h.checkEngine()
}

// send delivers seg from flow i's app address, together with the
// segments held before it; with hold, it is held too.
func (h *fzEngine) send(i int, seg *Segment, raw []byte, quick, hold bool) {
	id := h.tuple[i]
	hdr := packet.TCPHeader{Src: id.Src, Dst: id.Dst, Seq: uint32(seg.Seq), Ack: uint32(seg.Ack),
		Flags: seg.Flags, Window: seg.Wnd, Options: &seg.Opts}
	if raw != nil {
		hdr.Options, hdr.RawOptions = nil, raw
	}
	n, err := packet.BuildTCP(h.pkt, hdr, seg.Payload)
	if err != nil {
		h.fail("build: %v", err)
	}
	if raw != nil {
		opts := seg.Opts
		seg.Opts, _ = packet.ParseTCPOptions(raw)
		defer func() { seg.Opts = opts }()
	}
	h.peer[i].sent(seg, quick)
	h.held = append(h.held, append([]byte(nil), h.pkt[:n]...))
	// A SYN ends the batch: the handler's goroutine accepts the flow it
	// opens concurrently with the rest of the batch, and the model could
	// not tell which incarnation what follows belongs to.
	isSYN := seg.Flags&(packet.SYN|packet.ACK|packet.RST) == packet.SYN
	if !hold || isSYN || len(h.held) == 16 {
		h.flushHeld()
	}
}

// flushHeld delivers the held segments in one call.
func (h *fzEngine) flushHeld() {
	if len(h.held) == 0 {
		return
	}
	if err := h.e.DeliverInbound(h.held); err != nil {
		h.fail("DeliverInbound: %v", err)
	}
	h.held = nil
}

// settle waits until a SYN the handler holds has been accepted and its
// SYN-ACK written (Accept runs on the handler's goroutine), then moves the
// peer model to a new incarnation of the flow if there is one.
func (h *fzEngine) settle(i, before int) {
	id := h.tuple[i]
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.e.mu.RLock()
		f := h.e.flows[id]
		h.e.mu.RUnlock()
		if f == nil || f == h.flow[i] {
			return
		}
		f.mu.Lock()
		gone, tcb := f.gone, f.tcb
		f.mu.Unlock()
		h.mu.Lock()
		answered := h.synAcks[i] > before
		h.mu.Unlock()
		if gone {
			return
		}
		h.mu.Lock()
		// Accept's goroutine counts the SYN-ACK after the write returned.
		counted := h.e.ec.packetsOut.Load() == h.captured
		h.mu.Unlock()
		if tcb != nil && counted && (answered || tcb.State() != SynReceived) {
			f.mu.Lock()
			if h.flow[i] != nil {
				old := *h.peer[i]
				h.old[i] = &old
			}
			h.flow[i] = f
			h.peer[i].reset(tcb.irs, tcb.iss)
			h.peer[i].hook(tcb)
			f.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			h.fail("the handler did not answer the SYN of flow %d", i)
		}
		runtime.Gosched()
		time.Sleep(20 * time.Microsecond)
	}
}

// synAckCount is how many SYN-ACKs flow i got so far.
func (h *fzEngine) synAckCount(i int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.synAcks[i]
}

// app runs an application action on flow i's Conn.
func (h *fzEngine) app(i int, st *fzStep) {
	f, p := h.flow[i], h.peer[i]
	if f == nil {
		return
	}
	f.mu.Lock()
	c, tcb := f.conn, f.tcb
	var free int
	var readable bool
	if tcb != nil {
		free, readable = tcb.sndBuf.free(), tcb.Readable()
	}
	f.mu.Unlock()
	if c == nil {
		return
	}
	switch st.action {
	case fzWrite:
		n := min((int(st.arg)+1)*64, free)
		buf := make([]byte, n)
		for j := range buf {
			buf[j] = fzOutByte(p.written + uint64(j))
		}
		k, _ := c.Write(buf)
		p.written += uint64(k)
	case fzCloseWrite:
		p.finMaybe = true
		c.CloseWrite()
	case fzClose:
		p.finMaybe = true
		c.Close()
	case fzAbort:
		c.Abort()
	case fzCloseRead:
		c.CloseRead()
	default:
		if !readable {
			return
		}
		n, _ := c.Read(h.rbuf[:(int(st.arg)+1)*256])
		if err := p.checkRead(h.rbuf[:n]); err != nil {
			h.fail("flow %d: %v", i, err)
		}
	}
}

// collect checks every packet the engine wrote since the last call.
func (h *fzEngine) collect() {
	h.mu.Lock()
	out := h.out
	h.out = nil
	h.mu.Unlock()
	for _, b := range out {
		pk, err := packet.ParseIP(b)
		if err != nil {
			h.fail("engine wrote an invalid packet: %v (%x)", err, b)
		}
		if pk.Proto != packet.ProtoTCP {
			h.fail("engine wrote protocol %d", pk.Proto)
		}
		i := h.index(pk.DstAddrPort())
		if pk.DstAddrPort() != h.tuple[i].Src || pk.SrcAddrPort() != h.tuple[i].Dst {
			h.fail("packet %v → %v does not answer flow %v", pk.SrcAddrPort(), pk.DstAddrPort(), h.tuple[i])
		}
		tc := pk.TCP()
		if _, err := packet.ParseTCPOptions(tc.Options()); err != nil {
			h.fail("engine wrote malformed options: %v", err)
		}
		var seg Segment
		segmentOf(&seg, tc)
		p := h.peer[i]
		if h.old[i] != nil && seg.Flags&(packet.SYN|packet.ACK) != packet.SYN|packet.ACK {
			p = h.old[i]
		}
		mss := 1460
		if p.v6 {
			mss = 1440
		}
		if err := p.checkOut(&seg, mss, uint32(h.e.cfg.RecvBufMax)); err != nil {
			h.fail("flow %d: %s: %v", i, seg.String(), err)
		}
	}
	h.old = [2]*fzPeer{}
}

// checkEngine checks the TCBs and the engine's counters.
func (h *fzEngine) checkEngine() {
	for i, f := range h.flow {
		if f == nil {
			continue
		}
		f.mu.Lock()
		var err error
		if !f.gone && f.tcb != nil {
			err = h.peer[i].checkTCB(f.tcb)
		}
		f.mu.Unlock()
		if err != nil {
			h.fail("flow %d: %v", i, err)
		}
	}
	e := h.e
	e.mu.RLock()
	pending, synRcvd := e.pending, e.synRcvd
	flows := make([]*flow, 0, len(e.flows))
	for _, f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.RUnlock()
	var inPending, inSynRcvd, inState int
	for _, f := range flows {
		f.mu.Lock()
		if f.inPending {
			inPending++
		}
		if f.inSynRcvd {
			inSynRcvd++
		}
		if f.tcb != nil && f.tcb.State() == SynReceived {
			inState++
		}
		f.mu.Unlock()
	}
	if pending != inPending || synRcvd != inSynRcvd || inSynRcvd != inState || pending < 0 || synRcvd < 0 {
		h.fail("engine counts pending %d (flows %d), SYN-RECEIVED %d (flows %d, in state %d)",
			pending, inPending, synRcvd, inSynRcvd, inState)
	}
	st := e.Stats()
	for name, n := range st.States {
		if n <= 0 || !validStateName(name) {
			h.fail("Stats.States %v", st.States)
		}
	}
	h.mu.Lock()
	captured := h.captured
	h.mu.Unlock()
	if st.PacketsOut != captured {
		h.fail("Stats.PacketsOut %d, but %d packets were written", st.PacketsOut, captured)
	}
	if field, ok := countersMonotonic(h.prev, st); !ok {
		h.fail("counter %s went down: %+v → %+v", field, h.prev, st)
	}
	h.prev = st
}

func validStateName(s string) bool {
	for _, n := range stateNames {
		if n == s {
			return true
		}
	}
	return false
}

// countersMonotonic reports the first uint64 counter of Stats that is
// smaller in cur than in prev.
func countersMonotonic(prev, cur Stats) (string, bool) {
	a, b := reflect.ValueOf(prev), reflect.ValueOf(cur)
	for i := range a.NumField() {
		if a.Field(i).Kind() == reflect.Uint64 && b.Field(i).Uint() < a.Field(i).Uint() {
			return a.Type().Field(i).Name, false
		}
	}
	return "", true
}

func runTCBFuzz(t *testing.T, data []byte) { tcbFuzz(t, data) }

// tcbFuzz runs one input and returns the peer model and the counters.
func tcbFuzz(t *testing.T, data []byte) (*fzPeer, *Counters) {
	r := fzReader{b: data}
	hdr0, hdr1 := r.u8(), r.u8()
	cfg := DefaultConfig()
	fzConfig(&cfg, hdr1)
	var stats Counters
	cfg.Stats = &stats
	cfg.SetDefaults()
	now := t0
	p := &fzPeer{synOpt: fzSynOpts(hdr0&15, 100), tsval: 100}
	var hist []fzStep
	fail := func(format string, args ...any) {
		t.Helper()
		var b strings.Builder
		for i, st := range hist {
			fmt.Fprintf(&b, "\n  %3d %v", i, st)
		}
		t.Fatalf("%s\nsteps:%s", fmt.Sprintf(format, args...), b.String())
	}
	syn := Segment{Seq: testIRS, Flags: packet.SYN, Wnd: 65535, Opts: p.synOpt}
	p.sent(&syn, false)
	tcb := NewSynReceived(&cfg, &syn, testISS, 0x1000, now)
	p.reset(testIRS, testISS)
	p.hook(tcb)
	var emitErr error
	var emitted string
	emit := func(s *Segment) {
		if err := p.checkOut(s, cfg.MSS, uint32(cfg.RecvBufMax)); err != nil && emitErr == nil {
			emitErr, emitted = err, s.String()
		}
	}
	rbuf := make([]byte, 64<<10)
	step := func(st *fzStep) {
		switch st.kind {
		case fzSeg, fzQuick:
			seg, raw := p.segment(st)
			if raw != nil {
				seg.Opts, _ = packet.ParseTCPOptions(raw)
			}
			p.sent(&seg, st.kind == fzQuick)
			tcb.Input(&seg, now)
		case fzApp:
			tcbApp(tcb, p, st, rbuf, fail)
		}
		tcb.Output(now, emit)
		if st.adv > 0 {
			now = now.Add(st.adv)
			p.tsval += uint32(st.adv / time.Millisecond)
			if d := tcb.Deadline(); d != 0 && !now.Before(d) {
				tcb.OnTimer(now)
				tcb.Output(now, emit)
				if d := tcb.Deadline(); d != 0 && !d.After(now) {
					fail("after OnTimer(%v) and Output the deadline is %v", now, d)
				}
			}
		}
		if emitErr != nil {
			fail("%s: %v", emitted, emitErr)
		}
		if err := p.checkTCB(tcb); err != nil {
			fail("%v", err)
		}
	}
	tcb.Output(now, emit)
	third := fzStep{kind: fzQuick}
	if hdr1&0x40 != 0 {
		third.plen, third.bits = 100, 0x02
	}
	hist = append(hist, third)
	step(&third)
	for i := 0; i < fzMaxSteps && !r.done(); i++ {
		st := fzDecode(&r)
		hist = append(hist, st)
		step(&st)
	}
	return p, &stats
}

// tcbApp runs an application action directly on the TCB.
func tcbApp(tcb *TCB, p *fzPeer, st *fzStep, rbuf []byte, fail func(string, ...any)) {
	switch st.action {
	case fzWrite:
		buf := make([]byte, (int(st.arg)+1)*64)
		for j := range buf {
			buf[j] = fzOutByte(p.written + uint64(j))
		}
		k, _ := tcb.Write(buf)
		p.written += uint64(k)
	case fzCloseWrite:
		p.finMaybe = true
		tcb.CloseWrite()
	case fzClose:
		p.finMaybe = true
		tcb.Close()
	case fzAbort:
		tcb.Abort()
	case fzCloseRead:
		tcb.CloseRead()
	default:
		n, _ := tcb.Read(rbuf[:(int(st.arg)+1)*256])
		if err := p.checkRead(rbuf[:n]); err != nil {
			fail("%v", err)
		}
	}
}
