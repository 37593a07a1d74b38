package tcp

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

func recordingHarness(t *testing.T, keep int, mod func(*Options)) (*pktHarness, *Tracer, *Recorder) {
	rec := NewRecorder(keep)
	tr := NewRecordingTracer(rec)
	h := newPktHarness(t, func(o *Options) {
		o.Trace = tr
		if mod != nil {
			mod(o)
		}
	})
	return h, tr, rec
}

// closeByApp runs the app's FIN, our FIN and the app's last ACK on an
// established c: LAST-ACK, then CLOSED, and the flow leaves the table.
func closeByApp(t *testing.T, h *pktHarness, c stack.Conn, seq, iss uint32) {
	t.Helper()
	src := c.ID().Src
	h.send(seg{src: src, seq: seq, ack: iss + 1, flags: packet.ACK | packet.FIN})
	h.expectOne("ACK of the FIN")
	c.Close()
	fin := h.expectOne("our FIN")
	h.send(seg{src: src, seq: seq + 1, ack: fin.seq + 1, flags: packet.ACK})
	waitGone(t, h, c)
}

// establishFrom is establish from another app address.
func (h *pktHarness) establishFrom(src netip.AddrPort, isn uint32) (stack.Conn, uint32) {
	h.t.Helper()
	h.send(seg{src: src, seq: isn, flags: packet.SYN})
	r := h.request()
	done := make(chan stack.Conn, 1)
	go func() {
		c, err := r.Accept(context.Background())
		if err != nil {
			h.t.Error(err)
		}
		done <- c
	}()
	sa := h.expectOne("SYN-ACK")
	h.send(seg{src: src, seq: isn + 1, ack: sa.seq + 1, flags: packet.ACK})
	return <-done, sa.seq
}

func waitGone(t *testing.T, h *pktHarness, c stack.Conn) {
	t.Helper()
	giveUp := time.Now().Add(5 * time.Second)
	for c.(*Conn).State() != "CLOSED" {
		if time.Now().After(giveUp) {
			t.Fatalf("flow still %s", c.(*Conn).State())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRecorder_KeepsTheHandshakeAndTeardownNotTheData(t *testing.T) {
	h, tr, rec := recordingHarness(t, 4, nil)
	c, iss := h.establish(4294967000)
	tr.Bind(c.ID(), 42)
	tr.Upstream(c.ID(), "dial 198.19.0.2:80")
	seq := uint32(4294967001)
	for range 3 {
		h.send(seg{seq: seq, ack: iss + 1, flags: packet.ACK | packet.PSH, data: []byte("data")})
		seq += 4
	}
	h.advance(time.Second) // the delayed ACK
	h.take()
	if _, ok := rec.Ladder(42); !ok {
		t.Fatal("no ladder for the bound connection while it is live")
	}
	buf := make([]byte, 12)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	closeByApp(t, h, c, seq, iss)
	lines, ok := rec.Ladder(42)
	if !ok {
		t.Fatal("no ladder after the connection ended")
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"(LISTEN)", "SYN held while the handler decides", "→ ESTABLISHED",
		"gw ──► up", "dial 198.19.0.2:80", "data and ACK segments", "→ CLOSE-WAIT", "→ LAST-ACK", "→ CLOSED"} {
		if !strings.Contains(text, want) {
			t.Errorf("ladder lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "len 4") {
		t.Errorf("ladder keeps data segments:\n%s", text)
	}
}

func TestRecorder_KeepsTheLastFinishedLadders(t *testing.T) {
	h, tr, rec := recordingHarness(t, 1, nil)
	for i, port := range []uint16{40001, 40002} {
		c, iss := h.establishFrom(netip.AddrPortFrom(appAddr.Addr(), port), 1000)
		tr.Bind(c.ID(), uint64(i+1))
		closeByApp(t, h, c, 1001, iss)
	}
	if _, ok := rec.Ladder(1); ok {
		t.Error("the older ladder is kept past api.trace_buffer 1")
	}
	if _, ok := rec.Ladder(2); !ok {
		t.Error("the last ladder is not kept")
	}
}

func TestRecorder_ACookieSYNLeavesNothing(t *testing.T) {
	h, _, rec := recordingHarness(t, 4, func(o *Options) { o.AlwaysSYNCookies = true })
	for p := range uint16(100) {
		h.send(seg{src: netip.AddrPortFrom(appAddr.Addr(), 41000+p), seq: 1000, flags: packet.SYN})
	}
	h.take()
	rec.mu.Lock()
	n := len(rec.live)
	rec.mu.Unlock()
	if n != 0 {
		t.Errorf("%d ladders for SYNs answered with cookies, want none", n)
	}
}

func TestRecorder_AWrittenFlowsLadderHasItsSYNToo(t *testing.T) {
	rec := NewRecorder(4)
	var out strings.Builder
	lw := &lockedWriter{w: &out}
	tr, err := NewTracer(lw, "80")
	if err != nil {
		t.Fatal(err)
	}
	tr.Record(rec)
	h := newPktHarness(t, func(o *Options) { o.Trace = tr })
	c, _ := h.establish(1000)
	tr.Bind(c.ID(), 9)
	lines, _ := rec.Ladder(9)
	if len(lines) == 0 || !strings.Contains(lines[0], "(LISTEN)") {
		t.Errorf("recorded ladder starts %q, want the SYN", lines)
	}
	lw.mu.Lock()
	written := out.String()
	lw.mu.Unlock()
	if n := strings.Count(written, "(LISTEN)"); n != 1 {
		t.Errorf("the written trace has the SYN %d times, want once:\n%s", n, written)
	}
}

// lockedWriter serialises writes for the race detector's sake.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
