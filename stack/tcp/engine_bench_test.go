package tcp

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// The engine benchmarks drive an Engine through DeliverInbound and its
// Conns on manual time, with a PacketWriter that does not allocate, so
// that -benchmem shows what the engine itself allocates per packet.

// benchWriter is an allocation-free PacketWriter: it counts packets,
// keeps a copy of the last one, optionally queues copies in reused
// buffers, and reports the ISS of every SYN-ACK when synAck is set.
type benchWriter struct {
	mu     sync.Mutex // guards every field below
	n      int
	bytes  int64  // TCP payload bytes written
	last   []byte // copy of the last packet; cap is fixed
	queue  bool
	slots  [][]byte // reused buffers behind q
	q      [][]byte // queued packets, oldest first
	synAck chan Seq
}

func newBenchWriter() *benchWriter {
	return &benchWriter{last: make([]byte, 0, 64<<10), synAck: make(chan Seq, 1)}
}

func (w *benchWriter) WritePackets(bufs [][]byte, offset int) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range bufs {
		p := b[offset:]
		w.n++
		if len(p) > 40 && p[0]>>4 == 4 && p[9] == packet.ProtoTCP {
			ihl := int(p[0]&0xf) * 4
			w.bytes += int64(len(p) - ihl - packet.TCP(p[ihl:]).DataOffset())
		}
		w.last = append(w.last[:0], p...)
		if w.queue {
			i := len(w.q)
			if i == len(w.slots) {
				w.slots = append(w.slots, make([]byte, 0, 2048))
			}
			w.slots[i] = append(w.slots[i][:0], p...)
			w.q = append(w.q, w.slots[i])
		}
		if len(p) > 40 && p[0]>>4 == 4 && p[33]&byte(packet.SYN|packet.ACK) == byte(packet.SYN|packet.ACK) {
			// Trusted: on the superpacket path the checksum is partial.
			if pk, err := packet.ParseIPTrusted(p); err == nil && pk.Proto == packet.ProtoTCP {
				select {
				case w.synAck <- Seq(pk.TCP().Seq()):
				default:
				}
			}
		}
	}
	return len(bufs), nil
}

// lastTSVal returns the TSval of the last packet written, 0 if none.
// payload returns the TCP payload bytes written so far.
func (w *benchWriter) payload() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bytes
}

func (w *benchWriter) lastTSVal() uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	pk, err := packet.ParseIP(w.last)
	if err != nil || pk.Proto != packet.ProtoTCP {
		return 0
	}
	o, _ := packet.ParseTCPOptions(pk.TCP().Options())
	return o.TSVal
}

// benchHandler accepts every request and hands the Conn over.
type benchHandler struct{ conns chan stack.Conn }

func (h benchHandler) HandleTCP(ctx context.Context, r stack.Request) {
	c, err := r.Accept(ctx)
	if err != nil {
		return
	}
	select {
	case h.conns <- c:
	case <-ctx.Done():
	}
}
func (benchHandler) HandleUDP(ctx context.Context, c stack.PacketConn) { c.Close() }

// benchEngine is an engine on manual time with the app side of its
// connections played by hand-built packets.
type benchEngine struct {
	tb    testing.TB
	e     *Engine
	w     *benchWriter
	conns chan stack.Conn
	clk   *clock.Manual // the engine's clock; Accept reads it on the handler's goroutine
	pkt   []byte
	batch [][]byte
	opts  packet.TCPOptions
	// guard bounds waits on the handler's goroutine; reused so that the
	// harness does not allocate a timer per connection.
	guard *time.Timer
}

func newBenchEngine(tb testing.TB, mod func(*Options)) *benchEngine {
	tb.Helper()
	return newBenchEngineW(tb, newBenchWriter(), nil, mod)
}

// newBenchEngineW is newBenchEngine writing to out, or to w when out is
// nil; w is the bench writer behind out.
func newBenchEngineW(tb testing.TB, w *benchWriter, out stack.PacketWriter, mod func(*Options)) *benchEngine {
	tb.Helper()
	if out == nil {
		out = w
	}
	b := &benchEngine{tb: tb, w: w, conns: make(chan stack.Conn, 1),
		pkt: make([]byte, 2048), batch: make([][]byte, 1)}
	b.clk = clock.NewManual(clock.Time(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()))
	b.guard = time.NewTimer(time.Hour)
	b.guard.Stop()
	opts := DefaultOptions()
	opts.Clock = b.clk
	if mod != nil {
		mod(&opts)
	}
	e, err := New(out, benchHandler{b.conns}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	b.e = e
	tb.Cleanup(func() { e.Close() })
	return b
}

func (b *benchEngine) clock() clock.Time { return b.clk.Now() }

// tick advances the clock, which runs the engine's due timers.
func (b *benchEngine) tick(d time.Duration) { b.clk.Advance(d) }

// send builds a segment from src to dst and delivers it.
func (b *benchEngine) send(src, dst netip.AddrPort, seq, ack Seq, flags packet.TCPFlags, opts *packet.TCPOptions, data []byte) {
	n, err := packet.BuildTCP(b.pkt, packet.TCPHeader{Src: src, Dst: dst, Seq: uint32(seq), Ack: uint32(ack),
		Flags: flags, Window: 0xffff, Options: opts}, data)
	if err != nil {
		b.tb.Fatal(err)
	}
	b.deliver(b.pkt[:n])
}

func (b *benchEngine) deliver(p []byte) {
	b.batch[0] = p
	if err := b.e.DeliverInbound(b.batch); err != nil {
		b.tb.Fatal(err)
	}
}

// open runs a handshake from src with every option and returns the Conn
// and our ISS.
func (b *benchEngine) open(src, dst netip.AddrPort, irs Seq, tsval uint32, data []byte) (*Conn, Seq) {
	b.opts = packet.TCPOptions{HasMSS: true, MSS: 1460, HasWScale: true, WScale: 7, SACKPermitted: true,
		HasTS: true, TSVal: tsval}
	b.send(src, dst, irs, 0, packet.SYN, &b.opts, nil)
	iss := b.await(b.w.synAck, "SYN-ACK")
	b.opts = packet.TCPOptions{HasTS: true, TSVal: tsval + 1, TSEcr: 1}
	flags := packet.ACK
	if len(data) > 0 {
		flags |= packet.PSH
	}
	b.send(src, dst, irs.Add(1), iss.Add(1), flags, &b.opts, data)
	return awaitOn(b, b.conns, "Accept").(*Conn), iss
}

// await waits for what the handler's goroutine sends on ch.
func (b *benchEngine) await(ch chan Seq, what string) Seq {
	b.guard.Reset(5 * time.Second)
	defer b.guard.Stop()
	select {
	case v := <-ch:
		return v
	case <-b.guard.C:
		b.tb.Fatalf("%s: nothing after 5 s", what)
		return 0
	}
}

func awaitOn(b *benchEngine, ch chan stack.Conn, what string) stack.Conn {
	b.guard.Reset(5 * time.Second)
	defer b.guard.Stop()
	select {
	case v := <-ch:
		return v
	case <-b.guard.C:
		b.tb.Fatalf("%s: nothing after 5 s", what)
		return nil
	}
}

// tcpPatch rewrites the sequence, acknowledgment and timestamp fields of
// a built IPv4 TCP packet in place, fixing the checksum incrementally, so
// that a benchmark can resend one template without rebuilding it.
type tcpPatch struct {
	pkt  []byte
	tsAt int // offset of TSval in pkt
}

func newTCPPatch(tb testing.TB, pkt []byte) tcpPatch {
	pk, err := packet.ParseIP(pkt)
	if err != nil {
		tb.Fatal(err)
	}
	opts := pk.TCP().Options()
	hl := len(pkt) - len(pk.Transport)
	for i := 0; i+10 <= len(opts); {
		switch opts[i] {
		case packet.TCPOptNOP:
			i++
		case packet.TCPOptTimestamp:
			at := hl + packet.TCPMinHeaderLen + i + 2
			if (at-hl)%2 != 0 {
				tb.Fatalf("TSval at odd offset %d", at-hl)
			}
			return tcpPatch{pkt: pkt, tsAt: at}
		default:
			i += int(opts[i+1])
		}
	}
	tb.Fatal("template has no timestamp option")
	return tcpPatch{}
}

func (p tcpPatch) set32(at int, v uint32) {
	const ipHL = packet.IPv4MinHeaderLen
	t := packet.TCP(p.pkt[ipHL:])
	old := uint32(p.pkt[at])<<24 | uint32(p.pkt[at+1])<<16 | uint32(p.pkt[at+2])<<8 | uint32(p.pkt[at+3])
	p.pkt[at], p.pkt[at+1], p.pkt[at+2], p.pkt[at+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	t.SetChecksum(packet.UpdateChecksum32(t.Checksum(), old, v))
}

func (p tcpPatch) update(seq, ack Seq, tsval, tsecr uint32) {
	const ipHL = packet.IPv4MinHeaderLen
	p.set32(ipHL+4, uint32(seq))
	p.set32(ipHL+8, uint32(ack))
	p.set32(p.tsAt, tsval)
	p.set32(p.tsAt+4, tsecr)
}

// inboundLink is an established connection receiving full-sized data
// segments that the application reads at once.
type inboundLink struct {
	b     *benchEngine
	c     *Conn
	p     tcpPatch
	seq   Seq
	ack   Seq
	tsval uint32
	rbuf  []byte
}

const benchPayload = 1448 // 1500 - 20 - 20 - 12 (timestamps)

func newInboundLink(tb testing.TB) *inboundLink {
	b := newBenchEngine(tb, nil)
	const irs Seq = 0xffff_0000
	c, iss := b.open(appAddr, dstAddr, irs, 1000, nil)
	l := &inboundLink{b: b, c: c, seq: irs.Add(1), ack: iss.Add(1), tsval: 1002, rbuf: make([]byte, benchPayload)}
	opts := packet.TCPOptions{HasTS: true, TSVal: l.tsval, TSEcr: 1}
	n, err := packet.BuildTCP(b.pkt, packet.TCPHeader{Src: appAddr, Dst: dstAddr, Seq: uint32(l.seq), Ack: uint32(l.ack),
		Flags: packet.ACK | packet.PSH, Window: 0xffff, Options: &opts}, pattern(0, benchPayload))
	if err != nil {
		tb.Fatal(err)
	}
	if n != 1500 {
		tb.Fatalf("data packet of %d bytes, want 1500", n)
	}
	l.p = newTCPPatch(tb, b.pkt[:n])
	return l
}

// step delivers the next segment and reads it.
func (l *inboundLink) step() {
	l.p.update(l.seq, l.ack, l.tsval, 1)
	l.b.deliver(l.p.pkt)
	l.seq = l.seq.Add(benchPayload)
	l.tsval++
	if n, err := l.c.Read(l.rbuf); n != benchPayload || err != nil {
		l.b.tb.Fatalf("read %d, %v", n, err)
	}
	l.b.tick(10 * time.Microsecond)
}

// outboundLink is an established connection whose application writes
// full-sized segments that the app side acknowledges one by one.
type outboundLink struct {
	b     *benchEngine
	c     *Conn
	p     tcpPatch
	seq   Seq
	ack   Seq
	tsval uint32
	wbuf  []byte
}

func newOutboundLink(tb testing.TB) *outboundLink {
	b := newBenchEngine(tb, nil)
	const irs Seq = 0xffff_0000
	c, iss := b.open(appAddr, dstAddr, irs, 1000, nil)
	l := &outboundLink{b: b, c: c, seq: irs.Add(1), ack: iss.Add(1), tsval: 1002, wbuf: pattern(0, benchPayload)}
	opts := packet.TCPOptions{HasTS: true, TSVal: l.tsval, TSEcr: 1}
	n, err := packet.BuildTCP(b.pkt, packet.TCPHeader{Src: appAddr, Dst: dstAddr, Seq: uint32(l.seq), Ack: uint32(l.ack),
		Flags: packet.ACK, Window: 0xffff, Options: &opts}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	l.p = newTCPPatch(tb, b.pkt[:n])
	return l
}

// step writes one segment's worth and acknowledges it.
func (l *outboundLink) step() {
	if n, err := l.c.Write(l.wbuf); n != benchPayload || err != nil {
		l.b.tb.Fatalf("write %d, %v", n, err)
	}
	l.ack = l.ack.Add(benchPayload)
	l.p.update(l.seq, l.ack, l.tsval, l.b.w.lastTSVal())
	l.tsval++
	l.b.deliver(l.p.pkt)
	l.b.tick(10 * time.Microsecond)
}

// check fails unless every byte written was sent and acknowledged.
func (l *outboundLink) check(tb testing.TB) {
	f := l.c.f
	f.mu.Lock()
	una, max := f.tcb.sndUna, f.tcb.sndMax
	f.mu.Unlock()
	if una != l.ack || max != l.ack {
		tb.Fatalf("SND.UNA %d, SND.MAX %d; want both at %d: a write was not sent at once", una, max, l.ack)
	}
	if st := l.b.e.Stats(); st.ChallengeAcks != 0 || st.Retransmits != 0 {
		tb.Fatalf("challenge ACKs %d, retransmits %d", st.ChallengeAcks, st.Retransmits)
	}
}

func BenchmarkEngineInboundData(b *testing.B) {
	l := newInboundLink(b)
	for range 1000 {
		l.step()
	}
	b.ReportAllocs()
	b.SetBytes(benchPayload)
	for b.Loop() {
		l.step()
	}
	if st := l.b.e.Stats(); st.DroppedSegments != 0 || st.OutOfOrder != 0 {
		b.Fatalf("dropped %d, out of order %d", st.DroppedSegments, st.OutOfOrder)
	}
}

func BenchmarkEngineOutboundData(b *testing.B) {
	l := newOutboundLink(b)
	for range 1000 {
		l.step()
	}
	b.ReportAllocs()
	b.SetBytes(benchPayload)
	for b.Loop() {
		l.step()
	}
	l.check(b)
}

func TestEngineInboundData_SteadyStateDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers at random")
	}
	l := newInboundLink(t)
	for range 1000 {
		l.step()
	}
	if n := testing.AllocsPerRun(1000, l.step); n != 0 {
		t.Fatalf("%.2f allocations per inbound segment, want 0", n)
	}
}

func TestEngineOutboundData_SteadyStateDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers at random")
	}
	l := newOutboundLink(t)
	for range 1000 {
		l.step()
	}
	if n := testing.AllocsPerRun(1000, l.step); n != 0 {
		t.Fatalf("%.2f allocations per outbound segment, want 0", n)
	}
	l.check(t)
}

// transferLink connects an engine to a TCB playing the app (our own TCP,
// not gVisor, whose cost would dominate) through the engine's
// PacketWriter and DeliverInbound, in memory, on manual time.
type transferLink struct {
	b     *benchEngine
	c     *Conn
	peer  *TCB
	pcfg  Config
	seg   Segment
	emit  func(*Segment)
	out   [][]byte // the peer's packets for the next DeliverInbound
	slots [][]byte
	src   []byte
	rbuf  []byte
	moved int64
	err   error
	// offload: the engine writes superpackets with partial checksums,
	// which the peer takes as they are.
	offload bool
	// inPlace: the application fills the send buffer in place
	// (TryWriteFrom), as the relay does from a socket; copied counts
	// what a Write copied instead.
	inPlace bool
	copied  int64
}

func newTransferLink(tb testing.TB) *transferLink { return newTransferLinkW(tb, nil) }

// newTransferLinkW is newTransferLink with the engine on the superpacket
// path when ow is not nil.
func newTransferLinkW(tb testing.TB, ow *offloadBenchWriter) *transferLink {
	var b *benchEngine
	if ow != nil {
		b = newBenchEngineW(tb, ow.benchWriter, ow, nil)
	} else {
		b = newBenchEngine(tb, nil)
	}
	b.w.queue = true
	l := &transferLink{b: b, offload: ow != nil, pcfg: DefaultConfig(), src: pattern(0, 64<<10), rbuf: make([]byte, 256<<10)}
	l.pcfg.RecvBufSize, l.pcfg.RecvBufMax = 1<<20, 8<<20
	l.pcfg.SetDefaults()
	l.slots = make([][]byte, 256)
	for i := range l.slots {
		l.slots[i] = make([]byte, 2048)
	}
	l.out = make([][]byte, 0, len(l.slots))
	l.emit = l.emitPeer
	l.peer = NewSynSent(&l.pcfg, 0xffff_0000, 7, b.clock())
	l.pump()
	b.await(b.w.synAck, "SYN-ACK") // Accept runs on the handler's goroutine
	l.pump()
	l.c = awaitOn(b, b.conns, "Accept").(*Conn)
	if l.peer.State() != Established {
		tb.Fatalf("peer in %v", l.peer.State())
	}
	return l
}

// emitPeer builds the peer's segment into the next slot.
func (l *transferLink) emitPeer(s *Segment) {
	i := len(l.out)
	if i == len(l.slots) {
		// Not flushed here: the engine would reuse the buffers of the
		// packets being handed to the peer.
		l.slots = append(l.slots, make([]byte, 2048))
	}
	n, err := packet.BuildTCP(l.slots[i], packet.TCPHeader{Src: appAddr, Dst: dstAddr, Seq: uint32(s.Seq),
		Ack: uint32(s.Ack), Flags: s.Flags, Window: s.Wnd, Options: &s.Opts}, s.Payload)
	if err != nil {
		l.err = err
		return
	}
	l.out = append(l.out, l.slots[i][:n])
}

func (l *transferLink) flushPeer() {
	if len(l.out) == 0 {
		return
	}
	if err := l.b.e.DeliverInbound(l.out); err != nil {
		l.err = err
	}
	l.out = l.out[:0]
}

// pump moves packets both ways until neither side has anything to send.
func (l *transferLink) pump() {
	now := l.b.clock()
	l.peer.Output(now, l.emit)
	for {
		// The peer's packets first: they may wake the handler (SYN) or
		// open the window.
		l.flushPeer()
		if len(l.out) == 0 && !l.drainEngine(now) {
			return
		}
	}
}

// drainEngine hands the engine's queued packets to the peer, reads what
// arrived, and collects the peer's answers. It reports whether there
// was anything.
func (l *transferLink) drainEngine(now clock.Time) bool {
	w := l.b.w
	w.mu.Lock()
	q := w.q
	w.q = w.q[:0] // slots are reused only by the next write, after we are done
	w.mu.Unlock()
	if len(q) == 0 {
		return false
	}
	parse := packet.ParseIP
	if l.offload {
		parse = packet.ParseIPTrusted
	}
	for _, p := range q {
		pk, err := parse(p)
		if err != nil {
			l.err = err
			return false
		}
		segmentOf(&l.seg, pk.TCP())
		l.peer.Input(&l.seg, now)
		l.peer.Output(now, l.emit)
	}
	for {
		n, err := l.peer.Read(l.rbuf)
		l.moved += int64(n)
		if n == 0 || err != nil {
			break
		}
	}
	l.peer.Output(now, l.emit)
	return true
}

// run moves n bytes from the application to the peer.
func (l *transferLink) run(tb testing.TB, n int64) {
	target := l.moved + n
	f := l.c.f
	for l.moved < target {
		f.mu.Lock()
		free := f.tcb.sndBuf.free()
		f.mu.Unlock()
		switch {
		case free > 0 && l.inPlace:
			// The bytes a socket read would have put there.
			if _, err := l.c.TryWriteFrom(func(p []byte) (int, error) { return len(p), nil }); err != nil && err != syscall.EAGAIN {
				tb.Fatal(err)
			}
		case free > 0:
			n, err := l.c.Write(l.src[:min(free, len(l.src))])
			if err != nil {
				tb.Fatal(err)
			}
			l.copied += int64(n)
		}
		l.pump()
		l.b.tick(20 * time.Microsecond)
		now := l.b.clock()
		if d := l.peer.Deadline(); d != 0 && !now.Before(d) {
			l.peer.OnTimer(now)
		}
		if l.err != nil {
			tb.Fatal(l.err)
		}
	}
}

// BenchmarkEngineTransfer1GB moves 1 GiB per operation from an engine
// Conn to a TCB peer.
func BenchmarkEngineTransfer1GB(b *testing.B) {
	l := newTransferLink(b)
	l.run(b, 64<<20) // warm up: cwnd, receive buffer, queues
	const size = 1 << 30
	b.ReportAllocs()
	b.SetBytes(size)
	for b.Loop() {
		l.run(b, size)
	}
	st := l.b.e.Stats()
	b.ReportMetric(float64(st.Retransmits)/float64(b.N), "rexmit/op")
}

// BenchmarkEngineTransferCopies moves 1 GiB per operation (so allocs/op
// is allocations per GiB) from the application to a TCB peer: as
// segments written with Write, and as superpackets filled in place
// (TryWriteFrom, the evented relay's path from a socket). copiedB/op is
// the bytes the engine's side copied per GiB: into the send buffer (Write
// only) and from it into the packets written.
func BenchmarkEngineTransferCopies(b *testing.B) {
	for _, mode := range []string{"segments", "superpackets-in-place"} {
		b.Run(mode, func(b *testing.B) {
			var ow *offloadBenchWriter
			if mode != "segments" {
				ow = &offloadBenchWriter{benchWriter: newBenchWriter()}
			}
			l := newTransferLinkW(b, ow)
			l.inPlace = ow != nil
			l.run(b, 64<<20) // warm up: cwnd, receive buffer, queues
			const size = 1 << 30
			copied0, out0 := l.copied, l.b.w.payload()
			b.ReportAllocs()
			b.SetBytes(size)
			for b.Loop() {
				l.run(b, size)
			}
			copied := l.copied - copied0 + l.b.w.payload() - out0
			b.ReportMetric(float64(copied)/float64(b.N), "copiedB/op")
			st := l.b.e.Stats()
			b.ReportMetric(float64(st.SuperpacketsOut)/float64(b.N), "superpackets/op")
		})
	}
}

// offloadBenchWriter is the bench writer on the superpacket path: it
// takes the packets after their virtio-net header.
type offloadBenchWriter struct{ *benchWriter }

func (w *offloadBenchWriter) Offloads() bool { return true }

func (w *offloadBenchWriter) WritePacketsOffload(bufs [][]byte, offset int) (int, error) {
	return w.WritePackets(bufs, offset)
}

// BenchmarkEngineConnSetupTeardown runs per operation a whole connection:
// handshake through the handler's Accept, one byte each way, the app's
// FIN, ours, and the last ACK that takes the flow to CLOSED.
func BenchmarkEngineConnSetupTeardown(b *testing.B) {
	be := newBenchEngine(b, nil)
	buf := make([]byte, 16)
	one := []byte{'x'}
	port := uint16(1024)
	tsval := uint32(1)
	opts := &packet.TCPOptions{HasTS: true}
	b.ReportAllocs()
	for b.Loop() {
		port++
		if port == 0 {
			port = 1024
		}
		src := netip.AddrPortFrom(appAddr.Addr(), port)
		const irs Seq = 0xffff_fff0
		c, iss := be.open(src, dstAddr, irs, tsval, one)
		if n, err := c.Read(buf); n != 1 || err != nil {
			b.Fatalf("read %d, %v", n, err)
		}
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		tsval += 3
		opts.TSVal = tsval
		be.send(src, dstAddr, irs.Add(2), iss.Add(2), packet.ACK|packet.FIN, opts, nil)
		if _, err := c.Read(buf); err != io.EOF {
			b.Fatalf("read after FIN: %v", err)
		}
		c.Close()
		tsval++
		opts.TSVal = tsval
		be.send(src, dstAddr, irs.Add(3), iss.Add(3), packet.ACK, opts, nil)
		be.tick(time.Millisecond)
	}
	b.StopTimer()
	if st := be.e.Stats(); len(st.States) != 0 {
		b.Fatalf("connections left: %v", st.States)
	}
}
