package tcp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

const nearWrap = 0xffff_fff0 // client ISNs near 2^32 exercise wrap-around

func TestEngine_SYNHeldUntilAccept(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: nearWrap, flags: packet.SYN, opts: fullSYNOpts(100)})
	r := h.request()
	if r.ID() != (stack.FlowID{Src: appAddr, Dst: dstAddr}) {
		t.Fatalf("request for %v", r.ID())
	}
	h.expectNone("before the handler decided")

	done := make(chan error, 1)
	go func() { _, err := r.Accept(context.Background()); done <- err }()
	sa := h.expectOne("after Accept")
	if sa.flags != packet.SYN|packet.ACK || sa.ack != nearWrap+1 {
		t.Fatalf("got %v ack %#x; want SYN-ACK acking the SYN", sa.flags, sa.ack)
	}
	if sa.src != dstAddr || sa.dst != appAddr {
		t.Fatalf("SYN-ACK from %v to %v", sa.src, sa.dst)
	}
	o := sa.opts
	if !o.HasMSS || o.MSS != 1460 || !o.SACKPermitted || !o.HasTS || o.TSEcr != 100 || !o.HasWScale {
		t.Fatalf("SYN-ACK options %+v; want MSS 1460, SACK, TS echoing 100, wscale", o)
	}
	h.send(seg{seq: nearWrap + 1, ack: sa.seq + 1, flags: packet.ACK,
		opts: &packet.TCPOptions{HasTS: true, TSVal: 101, TSEcr: o.TSVal}})
	if err := <-done; err != nil {
		t.Fatalf("Accept: %v", err)
	}
}

func TestEngine_MSSClampedToMTU(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.MTU = 1280 })
	h.send(seg{seq: 1, flags: packet.SYN, opts: fullSYNOpts(1)})
	r := h.request()
	go r.Accept(context.Background())
	if sa := h.expectOne("SYN-ACK"); sa.opts.MSS != 1280-40 {
		t.Fatalf("MSS %d; want %d", sa.opts.MSS, 1280-40)
	}
}

func TestEngine_RejectWithResetSendsRST(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: nearWrap, flags: packet.SYN})
	h.request().Reject(true)
	rst := h.expectOne("reject")
	if rst.flags != packet.RST|packet.ACK || rst.ack != nearWrap+1 || rst.seq != 0 {
		t.Fatalf("got %v seq %d ack %#x; want RST/ACK ack SYN+1", rst.flags, rst.seq, rst.ack)
	}
	if st := h.e.Stats(); st.Pending != 0 || len(st.States) != 0 {
		t.Fatalf("flow left behind: %+v", st)
	}
}

func TestEngine_RejectWithoutResetStaysSilent(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 5, flags: packet.SYN})
	h.request().Reject(false)
	h.expectNone("silent reject")
	if st := h.e.Stats(); st.Pending != 0 {
		t.Fatalf("pending %d after reject", st.Pending)
	}
}

func TestEngine_SYNRetransmitWhilePendingIsAbsorbed(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 5, flags: packet.SYN})
	r := h.request()
	h.send(seg{seq: 5, flags: packet.SYN})
	h.send(seg{seq: 5, flags: packet.SYN})
	h.expectNone("retransmitted SYNs")
	select {
	case <-h.reqs:
		t.Fatal("a retransmitted SYN made a second request")
	default:
	}
	if n := h.e.Stats().SYNRetransmitsAbsorbed; n != 2 {
		t.Fatalf("absorbed %d; want 2", n)
	}
	r.Reject(true)
}

func TestEngine_AppRSTWhilePendingFailsAccept(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 5, flags: packet.SYN})
	r := h.request()
	h.send(seg{seq: 6, flags: packet.RST})
	if _, err := r.Accept(context.Background()); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Accept after app RST: %v; want ECONNRESET", err)
	}
	h.expectNone("accept of a reset flow")
}

func TestEngine_AckWithoutConnectionGetsRST(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 10, ack: 777, flags: packet.ACK})
	rst := h.expectOne("stray ACK")
	if rst.flags != packet.RST || rst.seq != 777 {
		t.Fatalf("got %v seq %d; want RST seq=SEG.ACK (RFC 9293 §3.10.7.2)", rst.flags, rst.seq)
	}
}

func TestListen_SYNWithFINIsDropped(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 10, flags: packet.SYN | packet.FIN})
	h.expectNone("SYN+FIN")
	select {
	case r := <-h.reqs:
		t.Fatalf("the handler was asked about %v", r.ID())
	default:
	}
	if s := h.e.Stats(); s.DroppedNoFlow != 1 || s.SYNs != 0 {
		t.Fatalf("stats: %d dropped, %d SYNs; want 1 and 0", s.DroppedNoFlow, s.SYNs)
	}
}

func TestEngine_RSTWithoutConnectionIsIgnored(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 10, flags: packet.RST})
	h.expectNone("stray RST")
	if n := h.e.Stats().RSTsIgnoredNoFlow; n != 1 {
		t.Fatalf("counted %d; want 1", n)
	}
}

func TestEngine_DataOnThirdACKIsDelivered(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: nearWrap, flags: packet.SYN})
	r := h.request()
	done := make(chan stack.Conn, 1)
	go func() { c, _ := r.Accept(context.Background()); done <- c }()
	sa := h.expectOne("SYN-ACK")
	h.send(seg{seq: nearWrap + 1, ack: sa.seq + 1, flags: packet.ACK | packet.PSH, data: []byte("GET /")})
	c := <-done
	if c == nil {
		t.Fatal("Accept failed")
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "GET /" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

func TestEngine_WriteAndHalfClose(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.TCB.NoDelay = true })
	c, iss := h.establish(nearWrap)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	d := h.expectOne("data")
	if string(d.data) != "hello" || d.seq != iss+1 {
		t.Fatalf("data %q seq %d", d.data, d.seq)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	fin := h.expectOne("FIN")
	if fin.flags&packet.FIN == 0 || fin.seq != iss+6 {
		t.Fatalf("got %v seq %d; want FIN at seq %d", fin.flags, fin.seq, iss+6)
	}
	// The app acknowledges and keeps sending: half-close, reads go on.
	h.send(seg{seq: nearWrap + 1, ack: iss + 7, flags: packet.ACK | packet.PSH, data: []byte("more")})
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "more" {
		t.Fatalf("read after CloseWrite: %q, %v", buf[:n], err)
	}
	h.send(seg{seq: nearWrap + 5, ack: iss + 7, flags: packet.ACK | packet.FIN})
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("read after app FIN: %v; want EOF", err)
	}
}

func TestEngine_AppRSTResetsConn(t *testing.T) {
	h := newPktHarness(t, nil)
	c, _ := h.establish(nearWrap)
	h.send(seg{seq: nearWrap + 1, flags: packet.RST})
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after RST: %v; want ECONNRESET", err)
	}
}

func TestEngine_AbortSendsRST(t *testing.T) {
	h := newPktHarness(t, nil)
	c, iss := h.establish(nearWrap)
	h.take()
	if err := c.Abort(); err != nil {
		t.Fatal(err)
	}
	rst := h.expectOne("abort")
	if rst.flags&packet.RST == 0 || rst.seq != iss+1 {
		t.Fatalf("got %v seq %d; want RST at SND.NXT", rst.flags, rst.seq)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after abort: %v", err)
	}
}

func TestEngine_CloseAbortsConnections(t *testing.T) {
	h := newPktHarness(t, nil)
	c, _ := h.establish(1)
	h.take()
	h.e.Close()
	rst := h.expectOne("engine close")
	if rst.flags&packet.RST == 0 {
		t.Fatalf("got %v; want RST", rst.flags)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after engine close succeeded")
	}
	if err := h.e.DeliverInbound(nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("DeliverInbound after Close: %v", err)
	}
}

func TestEngine_ICMPEchoAnsweredForAnyAddress(t *testing.T) {
	h := newPktHarness(t, nil)
	b := make([]byte, 100)
	n, err := packet.BuildEcho(b, packet.EchoHeader{Src: appAddr.Addr(), Dst: dstAddr.Addr(), ID: 7, Seq: 3}, []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	h.e.DeliverInbound([][]byte{b[:n]})
	h.mu.Lock()
	out := h.out
	h.out = nil
	h.mu.Unlock()
	if len(out) != 1 {
		t.Fatalf("%d packets; want one echo reply", len(out))
	}
	p, err := packet.ParseIP(out[0])
	if err != nil || p.Proto != packet.ProtoICMPv4 || p.ICMPv4().Type() != packet.ICMPv4EchoReply || p.Src != dstAddr.Addr() {
		t.Fatalf("reply %+v, %v", p, err)
	}
}

func TestEngine_SYNCookiesWhenPendingBacklogFull(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.PendingBacklog = 1 })
	h.send(seg{seq: 1, flags: packet.SYN}) // fills the backlog
	first := h.request()
	defer first.Reject(true)

	other := seg{src: netip.MustParseAddrPort("198.18.0.9:5555"), seq: nearWrap, flags: packet.SYN, opts: fullSYNOpts(42)}
	h.send(other)
	sa := h.expectOne("cookie SYN-ACK")
	if sa.flags != packet.SYN|packet.ACK || sa.ack != nearWrap+1 || !sa.opts.HasTS || !sa.opts.HasWScale || !sa.opts.SACKPermitted {
		t.Fatalf("cookie SYN-ACK %+v", sa)
	}
	if h.e.Stats().CookiesSent != 1 {
		t.Fatal("cookie not counted")
	}
	// A forged cookie is refused with a RST.
	h.send(seg{src: other.src, seq: nearWrap + 1, ack: sa.seq + 2, flags: packet.ACK,
		opts: &packet.TCPOptions{HasTS: true, TSVal: 43, TSEcr: sa.opts.TSVal}})
	if rst := h.expectOne("forged cookie"); rst.flags != packet.RST {
		t.Fatalf("forged cookie answered with %v", rst.flags)
	}
	// The genuine ACK, with data, creates the connection.
	h.send(seg{src: other.src, seq: nearWrap + 1, ack: sa.seq + 1, flags: packet.ACK | packet.PSH,
		opts: &packet.TCPOptions{HasTS: true, TSVal: 43, TSEcr: sa.opts.TSVal}, data: []byte("hi")})
	r := h.request()
	c, err := r.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if st := h.e.Stats(); st.CookiesValid != 1 || st.CookiesInvalid != 1 {
		t.Fatalf("cookie counters %+v", st)
	}
}

// timeWaitWithTimestamps opens a connection with timestamps (so that RFC
// 6191 applies), lets end close our side (Close or CloseWrite), and takes
// it into TIME-WAIT with the app's FIN. It returns the Conn and our FIN.
func (h *pktHarness) timeWaitWithTimestamps(end func(stack.Conn)) (stack.Conn, got) {
	h.t.Helper()
	h.send(seg{seq: nearWrap, flags: packet.SYN, opts: fullSYNOpts(1000)})
	r := h.request()
	done := make(chan stack.Conn, 1)
	go func() { c, _ := r.Accept(context.Background()); done <- c }()
	sa := h.expectOne("SYN-ACK")
	ts := func(v uint32) *packet.TCPOptions {
		return &packet.TCPOptions{HasTS: true, TSVal: v, TSEcr: sa.opts.TSVal}
	}
	h.send(seg{seq: nearWrap + 1, ack: sa.seq + 1, flags: packet.ACK, opts: ts(1001)})
	c := <-done
	end(c) // we close first (active close), the app answers with its FIN
	fin := h.expectOne("our FIN")
	h.send(seg{seq: nearWrap + 1, ack: fin.seq + 1, flags: packet.ACK | packet.FIN, opts: ts(1002)})
	h.expectOne("ACK of the app's FIN")
	if n := h.e.Stats().States["TIME-WAIT"]; n != 1 {
		h.t.Fatalf("states %v; want one TIME-WAIT", h.e.Stats().States)
	}
	return c, fin
}

func TestEngine_TimeWaitReusedByNewerSYN(t *testing.T) {
	h := newPktHarness(t, nil)
	h.timeWaitWithTimestamps(func(c stack.Conn) { c.Close() })
	// The client reuses the port at once with a newer timestamp.
	h.send(seg{seq: 12345, flags: packet.SYN, opts: fullSYNOpts(1003)})
	r2 := h.request()
	r2.Reject(true)
	if n := h.e.Stats().TimeWaitReuses; n != 1 {
		t.Fatalf("TIME-WAIT reuses %d; want 1", n)
	}
}

// TestEngine_TimeWaitOfAnOpenConnIsNotReused: while the application has
// only shut down writing, a new SYN for the 4-tuple gets a challenge ACK;
// once it closes the Conn, the same SYN starts a new connection.
func TestEngine_TimeWaitOfAnOpenConnIsNotReused(t *testing.T) {
	h := newPktHarness(t, nil)
	c, fin := h.timeWaitWithTimestamps(func(c stack.Conn) { c.CloseWrite() })
	h.send(seg{seq: 12345, flags: packet.SYN, opts: fullSYNOpts(1003)})
	ch := h.expectOne("answer to the SYN")
	if ch.flags != packet.ACK || ch.seq != fin.seq+1 || ch.ack != nearWrap+2 {
		t.Fatalf("got %v seq %d ack %d; want a challenge ACK (RFC 5961 §4)", ch.flags, ch.seq, ch.ack)
	}
	select {
	case r := <-h.reqs:
		t.Fatalf("the SYN reached the handler: %v", r.ID())
	default:
	}
	c.Close()
	h.send(seg{seq: 12345, flags: packet.SYN, opts: fullSYNOpts(1004)})
	h.request().Reject(true)
	if n := h.e.Stats().TimeWaitReuses; n != 1 {
		t.Fatalf("TIME-WAIT reuses %d; want 1 once the Conn is closed", n)
	}
}

func TestEngine_TimeWaitEndsAfter2MSL(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.TCB.MSL2 = 10 * time.Second })
	c, iss := h.establish(nearWrap)
	c.Close()
	h.expectOne("our FIN")
	h.send(seg{seq: nearWrap + 1, ack: iss + 2, flags: packet.ACK | packet.FIN})
	h.expectOne("ACK of FIN")
	h.advance(9 * time.Second)
	if h.e.Stats().States["TIME-WAIT"] != 1 {
		t.Fatal("TIME-WAIT ended early")
	}
	h.advance(2 * time.Second)
	if st := h.e.Stats(); len(st.States) != 0 {
		t.Fatalf("states after 2MSL: %v", st.States)
	}
}

func TestEngine_TimeWaitTableFullClosesAfterTheLastACK(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.MaxTimeWait = 2; o.TCB.MSL2 = 10 * time.Second })
	for port := uint16(5001); port <= 5003; port++ {
		h.activeCloseFrom(port)
	}
	if st := h.e.Stats(); st.States["TIME-WAIT"] != 2 || len(st.States) != 1 || st.TimeWaitOverflows != 1 {
		t.Fatalf("with the table full: states %v, overflows %d; want 2 TIME-WAIT and 1 overflow", st.States, st.TimeWaitOverflows)
	}
	// The overflowed connection is gone: its FIN, sent again, meets no
	// connection and is answered with a RST (RFC 9293 §3.10.7.1).
	h.send(seg{src: netip.AddrPortFrom(appAddr.Addr(), 5003), seq: 101, ack: 1, flags: packet.ACK | packet.FIN})
	if rst := h.expectOne("answer to the overflowed flow"); rst.flags&packet.RST == 0 {
		t.Fatalf("answer %+v; want RST", rst)
	}
	// 2·MSL frees both places for new TIME-WAIT connections.
	h.advance(11 * time.Second)
	h.activeCloseFrom(5004)
	if st := h.e.Stats(); st.States["TIME-WAIT"] != 1 || st.TimeWaitOverflows != 1 {
		t.Fatalf("after 2MSL: states %v, overflows %d", st.States, st.TimeWaitOverflows)
	}
}

func TestEngine_SynAckRetransmittedWithBackoff(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 1, flags: packet.SYN})
	r := h.request()
	go r.Accept(context.Background())
	first := h.expectOne("SYN-ACK")
	h.advance(999 * time.Millisecond)
	h.expectNone("before the initial RTO")
	h.advance(time.Millisecond)
	if again := h.expectOne("retransmission"); again.seq != first.seq || again.flags != packet.SYN|packet.ACK {
		t.Fatalf("retransmitted %+v", again)
	}
	h.advance(1999 * time.Millisecond)
	h.expectNone("before the doubled RTO")
	h.advance(time.Millisecond)
	h.expectOne("second retransmission")
}

// build returns the packet for a segment from the app (see send).
func (h *pktHarness) build(s seg) []byte {
	h.t.Helper()
	if !s.src.IsValid() {
		s.src = appAddr
	}
	if !s.dst.IsValid() {
		s.dst = dstAddr
	}
	if s.wnd == 0 {
		s.wnd = 65535
	}
	b := make([]byte, 100+len(s.data))
	n, err := packet.BuildTCP(b, packet.TCPHeader{Src: s.src, Dst: s.dst, Seq: s.seq, Ack: s.ack,
		Flags: s.flags, Window: s.wnd, Options: s.opts}, s.data)
	if err != nil {
		h.t.Fatal(err)
	}
	return b[:n]
}

func TestEngine_InOrderBurstGetsOneStretchACK(t *testing.T) {
	h := newPktHarness(t, nil)
	c, iss := h.establish(nearWrap)
	defer c.Close()
	h.take()
	var burst [][]byte
	for i := range 10 {
		burst = append(burst, h.build(seg{seq: nearWrap + 1 + uint32(i*1000), ack: iss + 1,
			flags: packet.ACK, data: make([]byte, 1000)}))
	}
	h.e.DeliverInbound(burst)
	acks := h.take()
	isn := uint32(nearWrap) // a variable: the sum wraps around 2^32
	if len(acks) != 1 || acks[0].ack != isn+1+10000 {
		t.Fatalf("got %d segments %+v; want one ACK of the whole burst", len(acks), acks)
	}
}

func TestEngine_OutOfOrderBurstIsAckedSegmentBySegment(t *testing.T) {
	h := newPktHarness(t, nil)
	c, iss := h.establish(nearWrap)
	defer c.Close()
	h.take()
	var burst [][]byte
	for i := 1; i <= 3; i++ { // the first segment is missing
		burst = append(burst, h.build(seg{seq: nearWrap + 1 + uint32(i*1000), ack: iss + 1,
			flags: packet.ACK, data: make([]byte, 1000)}))
	}
	h.e.DeliverInbound(burst)
	acks := h.take()
	if len(acks) != 3 {
		t.Fatalf("got %d ACKs; want a duplicate ACK for each out-of-order segment (RFC 5681 §4.2)", len(acks))
	}
	for _, a := range acks {
		if a.ack != nearWrap+1 {
			t.Fatalf("ACK %d; want duplicate ACKs of the hole at %d", a.ack, nearWrap+1)
		}
	}
}

// activeCloseFrom opens a connection from port, closes it from our side
// (the application closes its Conn) and lets the app's FIN take it into
// TIME-WAIT.
func (h *pktHarness) activeCloseFrom(port uint16) {
	h.t.Helper()
	src := netip.AddrPortFrom(appAddr.Addr(), port)
	h.send(seg{src: src, seq: 100, flags: packet.SYN})
	r := h.request()
	done := make(chan stack.Conn, 1)
	go func() { c, _ := r.Accept(context.Background()); done <- c }()
	sa := h.expectOne("SYN-ACK")
	h.send(seg{src: src, seq: 101, ack: sa.seq + 1, flags: packet.ACK})
	c := <-done
	c.Close()
	fin := h.expectOne("our FIN")
	h.send(seg{src: src, seq: 101, ack: fin.seq + 1, flags: packet.ACK | packet.FIN})
	if ack := h.expectOne("ACK of the app's FIN"); ack.flags != packet.ACK || ack.ack != 102 {
		h.t.Fatalf("port %d: last ACK %+v", port, ack)
	}
}

func TestEngine_ClosedTimeWaitConnectionKeepsOnlyACompactRecord(t *testing.T) {
	h := newPktHarness(t, nil)
	h.activeCloseFrom(1000) // lazily built state goes into the baseline
	const n = 1000
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	for i := range n {
		h.activeCloseFrom(uint16(2000 + i))
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := (float64(ms.HeapAlloc) - float64(before)) / n
	if st := h.e.Stats(); st.States["TIME-WAIT"] != n+1 {
		t.Fatalf("states %v", st.States)
	}
	h.e.mu.RLock()
	f := h.e.flows[stack.FlowID{Src: netip.AddrPortFrom(appAddr.Addr(), 2000), Dst: dstAddr}]
	h.e.mu.RUnlock()
	f.mu.Lock()
	frozen := f.tw != nil && f.tcb == nil
	f.mu.Unlock()
	if !frozen {
		t.Fatal("a TIME-WAIT connection the application closed still holds its TCB")
	}
	t.Logf("%.0f heap bytes per TIME-WAIT connection", per)
	// A whole TCB, its controller and the Conn's channels took ~2.9 KB.
	if !raceEnabled && per > 2000 {
		t.Errorf("%.0f heap bytes per TIME-WAIT connection, want at most 2000", per)
	}
}

// A flow whose output was deferred to the end of a TUN read batch can be
// frozen in TIME-WAIT before the batch ends (the app's Close and the
// peer's FIN coming in between); the batch's deferred output must then
// leave it alone.
func TestEngine_DeferredOutputOfAFrozenFlowIsANoOp(t *testing.T) {
	h := newPktHarness(t, nil)
	h.activeCloseFrom(3000)
	h.e.mu.RLock()
	f := h.e.flows[stack.FlowID{Src: netip.AddrPortFrom(appAddr.Addr(), 3000), Dst: dstAddr}]
	h.e.mu.RUnlock()
	b := h.e.getBatch()
	f.mu.Lock()
	if f.tw == nil {
		f.mu.Unlock()
		t.Fatal("the flow is not frozen")
	}
	b.deferOutput(f)
	f.mu.Unlock()
	b.runDeferred(h.clock())
	h.e.putBatch(b)
	h.expectNone("output of a frozen flow")
	if st := h.e.Stats(); st.States["TIME-WAIT"] != 1 {
		t.Fatalf("states %v", st.States)
	}
}

func TestChallengeLimiter_AllowsTheLimitPerSecond(t *testing.T) {
	l := NewChallengeLimiter(3)
	now := clock.Time(1000 * time.Second)
	for i := range 5 {
		if got, want := l.allow(now), i < 3; got != want {
			t.Fatalf("challenge %d: allowed %v, want %v", i, got, want)
		}
	}
	if !l.allow(now.Add(time.Second)) {
		t.Fatal("the next second allows again")
	}
}

// TestEngine_ChallengeAckLimitHoldsAcrossConnections: SYNs for two
// established connections get challenge ACKs until the engine-wide limit
// is used up, though each connection is within its own.
func TestEngine_ChallengeAckLimitHoldsAcrossConnections(t *testing.T) {
	h := newPktHarness(t, func(o *Options) { o.ChallengeAckGlobalLimit = 3 })
	h.establish(nearWrap)
	src2 := netip.AddrPortFrom(appAddr.Addr(), 6000)
	h.send(seg{src: src2, seq: 100, flags: packet.SYN})
	r := h.request()
	go func() { _, _ = r.Accept(context.Background()) }()
	sa := h.expectOne("SYN-ACK")
	h.send(seg{src: src2, seq: 101, ack: sa.seq + 1, flags: packet.ACK})
	answered := 0
	for range 3 {
		h.send(seg{seq: nearWrap + 1, flags: packet.SYN})        // first connection
		h.send(seg{src: src2, seq: 101 + 10, flags: packet.SYN}) // second
		answered += len(h.take())
	}
	if answered != 3 {
		t.Fatalf("%d challenge ACKs for 6 SYNs, want the engine-wide 3", answered)
	}
	if s := h.e.Stats(); s.ChallengeAcks != 3 || s.ChallengeAcksRateLimited != 3 {
		t.Fatalf("stats: %d sent, %d limited; want 3 and 3", s.ChallengeAcks, s.ChallengeAcksRateLimited)
	}
}

// returnAtOnce is a handler that decides nothing.
type returnAtOnce struct{}

func (returnAtOnce) HandleTCP(context.Context, stack.Request)        {}
func (returnAtOnce) HandleUDP(_ context.Context, c stack.PacketConn) { c.Close() }

// TestEngine_UndecidedHandlerMeansRST: the stack contract's rule for a
// handler that returns without Accept or Reject.
func TestEngine_UndecidedHandlerMeansRST(t *testing.T) {
	h := &pktHarness{t: t, clk: clock.NewManual(pktT0), reqs: make(chan stack.Request, 1)}
	opts := DefaultOptions()
	opts.Clock = h.clk
	e, err := New(capture{h}, returnAtOnce{}, opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	t.Cleanup(func() { e.Close() })
	h.send(seg{seq: 10, flags: packet.SYN})
	if rst := h.expectOne("answer to the SYN"); rst.flags&packet.RST == 0 || rst.ack != 11 {
		t.Fatalf("got %v ack %d; want RST acking the SYN", rst.flags, rst.ack)
	}
	if n := e.Stats().HandlerUndecided; n != 1 {
		t.Fatalf("HandlerUndecided = %d, want 1", n)
	}
}

// TestEngine_FirstDecisionWins: a second Accept fails, a Reject after
// Accept does nothing.
func TestEngine_FirstDecisionWins(t *testing.T) {
	h := newPktHarness(t, nil)
	h.send(seg{seq: 10, flags: packet.SYN})
	r := h.request()
	r.Reject(true)
	h.expectOne("RST")
	if _, err := r.Accept(context.Background()); err == nil {
		t.Fatal("Accept after Reject succeeded")
	}
	r.Reject(true)
	h.expectNone("a second Reject")
}
