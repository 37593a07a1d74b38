package udp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest"
	"github.com/tungate/tungate/stack/udp"
)

func TestDeliver_HandsEachNewFlowOnceWithDatagramsInOrder(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	other := flow4
	other.Src = netip.MustParseAddrPort("198.18.0.2:40001")
	tab.Deliver(udpPacket(t, flow4, []byte("a1")))
	tab.Deliver(udpPacket(t, flow6, []byte("b1")))
	tab.Deliver(udpPacket(t, flow4, []byte("a2")))
	tab.Deliver(udpPacket(t, other, []byte("c1")))
	tab.Deliver(udpPacket(t, flow4, []byte("a3")))
	tab.Deliver(udpPacket(t, flow6, []byte("b2")))

	want := map[stack.FlowID][]string{
		flow4: {"a1", "a2", "a3"},
		flow6: {"b1", "b2"},
		other: {"c1"},
	}
	for range len(want) {
		c := h.next(t)
		for _, w := range want[c.ID()] {
			if got := readString(t, c); got != w {
				t.Errorf("flow %v read %q, want %q", c.ID(), got, w)
			}
		}
		delete(want, c.ID())
	}
	if len(want) != 0 {
		t.Errorf("flows never handed over: %v", want)
	}
	h.noFlow(t)
	s := tab.Stats()
	if s.Flows != 3 || s.Active != 3 || s.DatagramsIn != 6 || s.BytesIn != 12 {
		t.Errorf("Stats = %+v, want 3 flows, 3 active, 6 datagrams of 12 bytes in", s)
	}
}

func TestDeliver_FirstDatagramIsReadableWhenTheHandlerStarts(t *testing.T) {
	w, h := &capture{}, newHandler()
	got := make(chan string, 1)
	h.serve = func(ctx context.Context, c stack.PacketConn) {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}
	tab := udp.New(w, h, udp.Options{})
	defer tab.Close()
	tab.Deliver(udpPacket(t, flow4, []byte("first")))
	if s := <-got; s != "first" {
		t.Errorf("handler's first Read = %q, want %q", s, "first")
	}
}

func TestDeliver_CopiesThePayload(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	p := udpPacket(t, flow4, []byte("keep"))
	tab.Deliver(p)
	copy(p.Payload, "XXXX") // the stack reuses its buffer
	if got := readString(t, h.next(t)); got != "keep" {
		t.Errorf("Read = %q, want %q", got, "keep")
	}
}

func TestDeliver_IgnoresOtherProtocols(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	buf := make([]byte, 100)
	n, err := packet.BuildEcho(buf, packet.EchoHeader{Src: app4.Addr(), Dst: dst4.Addr()}, []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := packet.ParseIP(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	tab.Deliver(p)
	h.noFlow(t)
	if s := tab.Stats(); s.Flows != 0 {
		t.Errorf("Stats = %+v, want no flow", s)
	}
}

func TestWrite_ReplyParsesBackWithSwappedAddresses(t *testing.T) {
	for _, flow := range []stack.FlowID{flow4, flow6} {
		t.Run(flow.String(), func(t *testing.T) {
			tab, w, h := newTable(t, udp.Options{})
			tab.Deliver(udpPacket(t, flow, []byte("ping")))
			c := h.next(t)
			if n, err := c.Write([]byte("pong")); n != 4 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			pkts := w.packets()
			if len(pkts) != 1 {
				t.Fatalf("%d packets written, want 1", len(pkts))
			}
			p, err := packet.ParseIP(pkts[0]) // checks both checksums
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			wantVersion := uint8(4)
			if flow.Src.Addr().Is6() {
				wantVersion = 6
			}
			if p.Version != wantVersion || p.Proto != packet.ProtoUDP {
				t.Errorf("reply is IPv%d proto %d, want IPv%d UDP", p.Version, p.Proto, wantVersion)
			}
			if p.SrcAddrPort() != flow.Dst || p.DstAddrPort() != flow.Src {
				t.Errorf("reply %v -> %v, want %v -> %v", p.SrcAddrPort(), p.DstAddrPort(), flow.Dst, flow.Src)
			}
			if p.UDP().Checksum() == 0 {
				t.Error("reply carries no UDP checksum")
			}
			if string(p.Payload) != "pong" {
				t.Errorf("reply payload %q, want %q", p.Payload, "pong")
			}
			if s := tab.Stats(); s.DatagramsOut != 1 || s.BytesOut != 4 {
				t.Errorf("Stats = %+v, want 1 datagram of 4 bytes out", s)
			}
		})
	}
}

func TestConn_AddressesAreTheFlowsEnds(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	tab.Deliver(udpPacket(t, flow6, []byte("x")))
	c := h.next(t)
	local, ok1 := c.LocalAddr().(*net.UDPAddr)
	remote, ok2 := c.RemoteAddr().(*net.UDPAddr)
	if !ok1 || !ok2 {
		t.Fatalf("addresses are %T and %T, want *net.UDPAddr", c.LocalAddr(), c.RemoteAddr())
	}
	if local.AddrPort() != flow6.Dst || remote.AddrPort() != flow6.Src {
		t.Errorf("LocalAddr %v, RemoteAddr %v; want %v, %v", local, remote, flow6.Dst, flow6.Src)
	}
	if c.ID() != flow6 {
		t.Errorf("ID = %v, want %v", c.ID(), flow6)
	}
}

func TestWrite_DatagramTooLargeForOnePacketFails(t *testing.T) {
	for _, tt := range []struct {
		flow stack.FlowID
		max  int
	}{{flow4, 65507}, {flow6, 65527}} {
		t.Run(tt.flow.String(), func(t *testing.T) {
			tab, w, h := newTable(t, udp.Options{})
			tab.Deliver(udpPacket(t, tt.flow, []byte("x")))
			c := h.next(t)
			if n, err := c.Write(make([]byte, tt.max)); n != tt.max || err != nil {
				t.Fatalf("Write of %d bytes = %d, %v; want it sent", tt.max, n, err)
			}
			if p, err := packet.ParseIP(w.packets()[0]); err != nil || len(p.Payload) != tt.max {
				t.Fatalf("largest datagram: ParseIP = %v, payload %d bytes", err, len(p.Payload))
			}
			n, err := c.Write(make([]byte, tt.max+1))
			if n != 0 || !errors.Is(err, syscall.EMSGSIZE) {
				t.Errorf("Write of %d bytes = %d, %v; want EMSGSIZE", tt.max+1, n, err)
			}
			if len(w.packets()) != 1 {
				t.Error("the oversized datagram was written")
			}
		})
	}
}

func TestRead_TruncatesToTheBuffer(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	tab.Deliver(udpPacket(t, flow4, []byte("0123456789")))
	tab.Deliver(udpPacket(t, flow4, []byte("next")))
	c := h.next(t)
	buf := make([]byte, 4)
	if n, err := c.Read(buf); n != 4 || err != nil || string(buf) != "0123" {
		t.Fatalf("Read = %d, %v, %q; want the first 4 bytes", n, err, buf[:n])
	}
	if got := readString(t, c); got != "next" {
		t.Errorf("next Read = %q, want the next datagram (the rest of the first is discarded)", got)
	}
}

func checkTimeout(t *testing.T, op string, err error) {
	t.Helper()
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%s = %v, want a timeout wrapping os.ErrDeadlineExceeded", op, err)
	}
}

func TestDeadlines_PastDeadlineFailsAtOnce(t *testing.T) {
	tab, w, h := newTable(t, udp.Options{})
	tab.Deliver(udpPacket(t, flow4, []byte("queued")))
	c := h.next(t)
	c.SetDeadline(time.Now().Add(-time.Second))
	_, err := c.Read(make([]byte, 10))
	checkTimeout(t, "Read", err)
	_, err = c.Write([]byte("x"))
	checkTimeout(t, "Write", err)
	if len(w.packets()) != 0 {
		t.Error("a Write past its deadline was sent")
	}
	c.SetDeadline(time.Time{})
	if got := readString(t, c); got != "queued" {
		t.Errorf("Read after clearing the deadline = %q, want the queued datagram", got)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Errorf("Write after clearing the deadline: %v", err)
	}
}

func TestDeadlines_ReadDeadlineWakesABlockedRead(t *testing.T) {
	clk := clock.NewManual(clock.RealStart)
	tab, _, h := newTable(t, udp.Options{Clock: clk})
	tab.Deliver(udpPacket(t, flow4, []byte("x")))
	c := h.next(t)
	readString(t, c)
	c.SetReadDeadline(time.Now().Add(time.Hour))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	c.SetReadDeadline(time.Now().Add(time.Minute)) // moved closer while Read waits
	clk.Advance(59 * time.Second)
	select {
	case err := <-errc:
		t.Fatalf("Read returned %v before its deadline", err)
	default:
	}
	clk.Advance(time.Second)
	select {
	case err := <-errc:
		checkTimeout(t, "Read", err)
	case <-time.After(waitLimit):
		t.Fatal("Read did not time out")
	}
}

func TestDeadlines_ExtendedDeadlineKeepsReadWaiting(t *testing.T) {
	clk := clock.NewManual(clock.RealStart)
	tab, _, h := newTable(t, udp.Options{Clock: clk})
	tab.Deliver(udpPacket(t, flow4, []byte("x")))
	c := h.next(t)
	readString(t, c)
	c.SetReadDeadline(time.Now().Add(time.Second))
	c.SetReadDeadline(time.Now().Add(time.Hour)) // the first timer must not fire
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 10)
		n, err := c.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	clk.Advance(time.Minute) // well past the first deadline
	tab.Deliver(udpPacket(t, flow4, []byte("late")))
	if s := <-got; s != "late" {
		t.Errorf("Read = %q, want %q", s, "late")
	}
}

func TestClose_FailsReadsAndWritesAndIsIdempotent(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	tab.Deliver(udpPacket(t, flow4, []byte("x")))
	c := h.next(t)
	readString(t, c)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("blocked Read = %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if s := tab.Stats(); s.Active != 0 {
		t.Errorf("Stats.Active = %d after Close, want 0", s.Active)
	}
}

func TestClose_LaterDatagramStartsANewFlow(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	tab.Deliver(udpPacket(t, flow4, []byte("one")))
	first := h.next(t)
	tab.Deliver(udpPacket(t, flow4, []byte("unread")))
	stacktest.Eventually(t, "the second datagram is queued", func() bool { return tab.Stats().DatagramsIn == 2 })
	first.Close()
	tab.Deliver(udpPacket(t, flow4, []byte("two")))
	second := h.next(t)
	if second == first {
		t.Fatal("the closed flow was reused")
	}
	if got := readString(t, second); got != "two" {
		t.Errorf("new flow read %q, want %q", got, "two")
	}
	if s := tab.Stats(); s.Flows != 2 || s.Active != 1 || s.ClosedDrops != 2 {
		t.Errorf("Stats = %+v, want 2 flows, 1 active, 2 unread datagrams dropped at Close", s)
	}
}

func TestQueue_OverflowDropsNewestAndCounts(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{QueueLen: 4})
	for i := range 10 {
		tab.Deliver(udpPacket(t, flow4, fmt.Appendf(nil, "d%d", i)))
	}
	c := h.next(t)
	for i := range 4 {
		if got, want := readString(t, c), fmt.Sprintf("d%d", i); got != want {
			t.Errorf("Read %d = %q, want %q", i, got, want)
		}
	}
	c.SetReadDeadline(time.Now())
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a fifth Read = %v, want nothing queued", err)
	}
	if s := tab.Stats(); s.DatagramsIn != 4 || s.QueueDrops != 6 {
		t.Errorf("Stats = %+v, want 4 in and 6 queue drops", s)
	}
}

func TestMaxFlows_DropsDatagramsOfFlowsBeyondTheLimit(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{MaxFlows: 2})
	tab.Deliver(udpPacket(t, flow4, []byte("a")))
	tab.Deliver(udpPacket(t, flow6, []byte("b")))
	third := stack.FlowID{Src: app4, Dst: netip.MustParseAddrPort("198.19.0.3:53")}
	tab.Deliver(udpPacket(t, third, []byte("c")))
	first, _ := h.next(t), h.next(t)
	h.noFlow(t)
	tab.Deliver(udpPacket(t, flow4, []byte("a2"))) // an open flow still gets its datagrams
	if s := tab.Stats(); s.Flows != 2 || s.FlowLimitDrops != 1 || s.DatagramsIn != 3 {
		t.Errorf("Stats = %+v, want 2 flows, 1 flow-limit drop, 3 datagrams in", s)
	}
	first.Close()
	tab.Deliver(udpPacket(t, third, []byte("c2")))
	if c := h.next(t); c.ID() != third {
		t.Errorf("flow %v admitted, want %v", c.ID(), third)
	}
}

func TestTableClose_ClosesFlowsAndWaitsForHandlers(t *testing.T) {
	w, h := &capture{}, newHandler()
	release := make(chan struct{})
	readFirst := make(chan struct{}, 2)
	h.serve = func(ctx context.Context, c stack.PacketConn) {
		buf := make([]byte, 10)
		if _, err := c.Read(buf); err == nil {
			readFirst <- struct{}{}
		}
		for {
			if _, err := c.Read(buf); err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Read during Table.Close = %v, want net.ErrClosed", err)
				}
				break
			}
		}
		<-ctx.Done()
		<-release // still running when Close is called
	}
	tab := udp.New(w, h, udp.Options{})
	tab.Deliver(udpPacket(t, flow4, []byte("a")))
	tab.Deliver(udpPacket(t, flow6, []byte("b")))
	c := h.next(t)
	h.next(t)
	<-readFirst
	<-readFirst
	closed := make(chan struct{})
	go func() {
		tab.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while handlers were running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	if n := h.returnedCount(); n != 2 {
		t.Errorf("%d handlers returned before Close did, want 2", n)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Table.Close = %v, want net.ErrClosed", err)
	}
	tab.Deliver(udpPacket(t, flow4, []byte("late")))
	h.noFlow(t)
	if s := tab.Stats(); s.Active != 0 || s.ClosedDrops != 1 {
		t.Errorf("Stats = %+v, want nothing active and the late datagram dropped", s)
	}
	if err := tab.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestHandler_FlowIsClosedWhenTheHandlerForgets(t *testing.T) {
	tab, _, h := newTable(t, udp.Options{})
	h.leave = true
	h.serve = func(context.Context, stack.PacketConn) {}
	tab.Deliver(udpPacket(t, flow4, []byte("a")))
	c := h.next(t)
	stacktest.Eventually(t, "the flow is closed", func() bool { return tab.Stats().Active == 0 })
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write = %v, want net.ErrClosed", err)
	}
}

func TestWrite_WriterErrorIsReturnedAndCounted(t *testing.T) {
	tab, w, h := newTable(t, udp.Options{})
	tab.Deliver(udpPacket(t, flow4, []byte("a")))
	c := h.next(t)
	boom := errors.New("device gone")
	w.setErr(boom)
	if _, err := c.Write([]byte("x")); !errors.Is(err, boom) {
		t.Errorf("Write = %v, want the writer's error", err)
	}
	if s := tab.Stats(); s.WriteErrors != 1 || s.DatagramsOut != 0 {
		t.Errorf("Stats = %+v, want 1 write error and nothing out", s)
	}
}

func TestConcurrentFlows_EveryDatagramArrivesOnce(t *testing.T) {
	w, h := &capture{}, newHandler()
	const flows, per = 8, 100
	var mu sync.Mutex
	seen := map[string]int{}
	h.serve = func(ctx context.Context, c stack.PacketConn) {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			seen[string(buf[:n])]++
			mu.Unlock()
			c.Write(buf[:n])
		}
	}
	tab := udp.New(w, h, udp.Options{QueueLen: per})
	var wg sync.WaitGroup
	for f := range flows {
		wg.Go(func() {
			flow := flow4
			flow.Src = netip.MustParseAddrPort(fmt.Sprintf("198.18.0.2:%d", 41000+f))
			for i := range per {
				tab.Deliver(udpPacket(t, flow, fmt.Appendf(nil, "%d/%d", f, i)))
			}
		})
	}
	wg.Wait()
	for range flows {
		<-h.conns
	}
	stacktest.Eventually(t, "every datagram was echoed", func() bool { return tab.Stats().DatagramsOut == flows*per })
	tab.Close()
	if len(seen) != flows*per {
		t.Errorf("%d distinct datagrams read, want %d", len(seen), flows*per)
	}
	for d, n := range seen {
		if n != 1 {
			t.Errorf("datagram %s read %d times", d, n)
		}
	}
	if len(w.packets()) != flows*per {
		t.Errorf("%d packets written, want %d", len(w.packets()), flows*per)
	}
}

func TestRefuse_AnswersTheFirstDatagramWithPortUnreachable(t *testing.T) {
	for _, flow := range []stack.FlowID{flow4, flow6} {
		t.Run(flow.String(), func(t *testing.T) {
			tab, w, h := newTable(t, udp.Options{})
			tab.Deliver(udpPacket(t, flow, []byte("query")))
			c := h.next(t)
			if err := c.(stack.Refuser).Refuse(); err != nil {
				t.Fatal(err)
			}
			pkts := w.packets()
			if len(pkts) != 1 {
				t.Fatalf("%d packets written, want 1", len(pkts))
			}
			p, err := packet.ParseIP(pkts[0])
			if err != nil {
				t.Fatalf("does not parse: %v", err)
			}
			m := packet.ICMPv4(p.Transport)
			want := [2]uint8{packet.ICMPv4DestUnreach, packet.ICMPv4CodePortUnreach}
			if flow.Src.Addr().Is6() {
				want = [2]uint8{packet.ICMPv6DestUnreach, packet.ICMPv6CodePortUnreach}
			}
			if p.Src != flow.Dst.Addr() || p.Dst != flow.Src.Addr() || [2]uint8{m.Type(), m.Code()} != want {
				t.Errorf("%v→%v type %d code %d, want %v→%v %v", p.Src, p.Dst, m.Type(), m.Code(), flow.Dst.Addr(), flow.Src.Addr(), want)
			}
			if q := m.Payload(); len(q) < 8 || !strings.HasSuffix(string(q), "query") {
				t.Errorf("quote %q does not end with the datagram", q)
			}
			if _, err := c.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Read after Refuse: %v, want closed", err)
			}
			if s := tab.Stats(); s.Refused != 1 {
				t.Errorf("Stats %+v, want one refused", s)
			}
		})
	}
}
