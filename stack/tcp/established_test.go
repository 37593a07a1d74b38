package tcp

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// smallWindow gives a 4000-byte receive buffer with no scaling, so window
// edges are easy to hit.
func smallWindow(c *Config) { c.RecvBufSize, c.RecvBufMax = 4000, 4000 }

// --- First step: the acceptability table of RFC 9293 §3.10.7.4. ---

func TestEstablished_EmptySegmentAcceptability(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  int64 // from RCV.NXT
		ok   bool
	}{
		{"left edge", 0, true},
		{"inside", 100, true},
		{"last octet of window", 3999, true},
		{"right edge", 4000, false},
		{"beyond", 1 << 20, false},
		{"before left edge", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := established(t, smallWindow)
			a := h.ack()
			a.Seq = h.peerNxt.Add(uint32(tc.off))
			a.Wnd = 77
			h.in(a)
			accepted := h.tcb.sndWnd == 77<<peerShift
			if accepted != tc.ok {
				t.Fatalf("accepted=%v, want %v", accepted, tc.ok)
			}
			if !tc.ok {
				wantAck(t, h.one(), h.peerNxt)
				h.wantDrop(dropOutOfWindow)
			} else {
				h.none()
			}
		})
	}
}

func TestEstablished_DataSegmentAcceptability(t *testing.T) {
	for _, tc := range []struct {
		name      string
		off       int64
		n         int
		delivered int
	}{
		{"at left edge", 0, 100, 100},
		{"starts before, ends inside", -50, 100, 50},
		{"ends exactly at left edge", -100, 100, 0},
		{"last octet inside window", 3999, 10, 0}, // accepted, stored out of order
		{"starts at right edge", 4000, 10, 0},
		{"entirely old", -200, 100, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := established(t, smallWindow)
			s := h.ack()
			s.Seq = h.peerNxt.Add(uint32(tc.off))
			s.Payload = pattern(0, tc.n)
			h.in(s)
			if got := h.tcb.rcvBuf.len(); got != tc.delivered {
				t.Fatalf("delivered %d bytes, want %d", got, tc.delivered)
			}
		})
	}
}

func TestEstablished_OldDuplicateGetsAck(t *testing.T) {
	h := established(t)
	s := h.ack()
	s.Seq = h.peerNxt.Add(^uint32(99)) // 100 before RCV.NXT
	s.Payload = pattern(0, 100)
	h.in(s)
	wantAck(t, h.one(), h.peerNxt)
}

func TestEstablished_ZeroWindowAcceptsOnlyEmptySegmentAtRcvNxt(t *testing.T) {
	h := established(t, smallWindow)
	h.in(h.data(pattern(0, 4000))) // fills the buffer
	h.advance(time.Second)
	if a := h.one(); a.Wnd != 0 {
		t.Fatalf("window %d after filling the buffer, want 0", a.Wnd)
	}
	a := h.ack()
	a.Seq = h.peerNxt.Add(1)
	h.in(a)
	wantAck(t, h.one(), h.peerNxt) // empty but not at RCV.NXT: unacceptable
	h.wantDrop(dropOutOfWindow)
	a = h.ack()
	a.Wnd = 5
	h.in(a)
	h.none()
	if h.tcb.sndWnd != 5<<peerShift {
		t.Fatal("empty segment at RCV.NXT in a zero window was not processed")
	}
}

func TestEstablished_ZeroWindowDataIsDroppedButItsACKProcessed(t *testing.T) {
	h := established(t, smallWindow)
	h.in(h.data(pattern(0, 4000)))
	h.advance(time.Second)
	h.take()
	h.tcb.Write([]byte("x"))
	h.output()
	h.take()
	s := h.data([]byte("more")) // seq == RCV.NXT, window zero
	h.peerNxt = s.Seq           // the peer will have to resend it
	h.in(s)
	wantAck(t, h.one(), h.peerNxt)
	if h.tcb.rcvBuf.len() != 4000 {
		t.Fatal("data accepted into a zero window")
	}
	if h.tcb.sndUna != h.tcb.sndMax {
		t.Fatal("ACK of a zero-window data segment was not processed")
	}
}

// --- Second step: RST (RFC 5961 §3). ---

func TestEstablished_RSTAtRcvNxtResetsConnection(t *testing.T) {
	h := established(t)
	h.in(h.rst(h.peerNxt))
	h.none()
	h.wantState(Closed)
	if e := h.tcb.Events(); e&EventReset == 0 {
		t.Fatal("no EventReset")
	}
	if _, err := h.tcb.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read err %v, want ECONNRESET", err)
	}
	if _, err := h.tcb.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Write err %v, want ECONNRESET", err)
	}
	if h.stats.RSTsReceived.Load() != 1 {
		t.Error("RSTsReceived not counted")
	}
}

func TestEstablished_RSTFlushesBufferedData(t *testing.T) {
	h := established(t)
	h.in(h.data([]byte("unread")))
	h.in(h.rst(h.peerNxt))
	if n, err := h.tcb.Read(make([]byte, 10)); n != 0 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read = %d, %v; want 0, ECONNRESET", n, err)
	}
}

func TestEstablished_RSTInWindowGetsChallengeAck(t *testing.T) {
	h := established(t)
	h.in(h.rst(h.peerNxt.Add(1)))
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(Established)
	h.wantDrop(dropRSTChallenge)
	if h.stats.ChallengeAcks.Load() != 1 {
		t.Error("challenge ACK not counted")
	}
}

func TestEstablished_RSTOutsideWindowIsSilentlyDropped(t *testing.T) {
	h := established(t)
	h.in(h.rst(h.peerNxt.Add(^uint32(0)))) // RCV.NXT-1
	h.none()
	h.wantState(Established)
	h.wantDrop(dropRSTOutOfWindow)
}

func TestEstablished_ChallengeAcksAreRateLimited(t *testing.T) {
	h := established(t, func(c *Config) { c.ChallengeAckLimit = 3 })
	for range 5 {
		h.in(h.rst(h.peerNxt.Add(7)))
	}
	if n := len(h.take()); n != 3 {
		t.Fatalf("%d challenge ACKs in one second, want 3", n)
	}
	h.wantDrop(dropChallengeLimit)
	h.now = h.now.Add(time.Second)
	h.in(h.rst(h.peerNxt.Add(7)))
	wantAck(t, h.one(), h.peerNxt)
}

// --- Fourth step: SYN (RFC 5961 §4). ---

func TestEstablished_SYNInWindowGetsChallengeAck(t *testing.T) {
	h := established(t)
	syn := h.peerSyn()
	syn.Seq = h.peerNxt.Add(3)
	h.in(syn)
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(Established)
	h.wantDrop(dropSYNChallenge)
}

func TestEstablished_SYNAtRcvNxtGetsChallengeAck(t *testing.T) {
	h := established(t)
	syn := h.peerSyn()
	syn.Seq = h.peerNxt
	syn.Flags |= packet.ACK
	syn.Ack = h.tcb.sndMax
	h.in(syn)
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(Established)
}

func TestEstablished_OldSYNIsAnsweredWithAck(t *testing.T) {
	h := established(t)
	h.in(h.peerSyn()) // seq IRS: below RCV.NXT
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(Established)
}

// --- Fifth step: ACK (RFC 9293 and RFC 5961 §5). ---

func TestEstablished_ACKOfUnsentDataIsDroppedWithAck(t *testing.T) {
	h := established(t)
	s := h.data([]byte("abc"))
	s.Ack = h.tcb.sndMax.Add(1)
	h.in(s)
	wantAck(t, h.one(), s.Seq) // the data was not taken
	h.wantDrop(dropAckChallenge)
	if h.tcb.rcvBuf.len() != 0 {
		t.Fatal("data of a segment with an unacceptable ACK was delivered")
	}
}

func TestEstablished_ACKBelowMaxSndWndIsDroppedWithAck(t *testing.T) {
	h := established(t)
	a := h.ackOf(h.tcb.sndUna.Add(^h.tcb.maxSndWnd)) // SND.UNA - MAX.SND.WND - 1
	h.in(a)
	wantAck(t, h.one(), h.peerNxt)
	h.wantDrop(dropAckChallenge)
}

func TestEstablished_OldACKWithinMaxSndWndIsAccepted(t *testing.T) {
	h := established(t)
	s := h.data([]byte("abc"))
	s.Ack = h.tcb.sndUna.Add(^uint32(999)) // 1000 below SND.UNA
	h.in(s)
	if h.tcb.rcvBuf.len() != 3 {
		t.Fatal("segment with an old but acceptable ACK was not processed")
	}
}

func TestEstablished_SegmentWithoutACKBitIsDropped(t *testing.T) {
	h := established(t)
	s := h.data([]byte("abc"))
	s.Flags = packet.PSH
	h.in(s)
	h.none()
	h.wantDrop(dropNoACK)
	if h.tcb.rcvBuf.len() != 0 {
		t.Fatal("data without ACK bit delivered")
	}
}

func TestEstablished_WindowUpdateFollowsWL1WL2Rule(t *testing.T) {
	h := established(t)
	h.in(h.data([]byte("abcd")))
	old := h.ack()
	old.Seq = h.peerNxt.Add(^uint32(3)) // an older segment (SND.WL1 > SEG.SEQ)
	old.Payload = []byte("abcd")
	old.Wnd = 1
	h.in(old)
	if h.tcb.sndWnd != peerWnd<<peerShift {
		t.Fatalf("old segment changed SND.WND to %d", h.tcb.sndWnd)
	}
	nw := h.ack()
	nw.Wnd = 9
	h.in(nw)
	if h.tcb.sndWnd != 9<<peerShift {
		t.Fatalf("SND.WND %d, want %d", h.tcb.sndWnd, 9<<peerShift)
	}
}

// --- Timestamps (RFC 7323). ---

func TestEstablished_PAWSDropsOldTimestampWithAck(t *testing.T) {
	h := established(t)
	s := h.data([]byte("old"))
	s.Opts = packet.TCPOptions{HasTS: true, TSVal: h.peerTS - 5}
	h.in(s)
	wantAck(t, h.one(), s.Seq)
	h.wantDrop(dropPAWS)
	if h.stats.PAWSRejected.Load() != 1 {
		t.Error("PAWSRejected not counted")
	}
}

func TestEstablished_PAWSDoesNotApplyToRST(t *testing.T) {
	h := established(t)
	r := h.rst(h.peerNxt)
	r.Opts = packet.TCPOptions{HasTS: true, TSVal: h.peerTS - 5}
	h.in(r)
	h.wantState(Closed)
}

func TestEstablished_PAWSIgnoresTSRecentOlderThan24Days(t *testing.T) {
	h := established(t)
	h.now = h.now.Add(25 * 24 * time.Hour)
	s := h.data([]byte("late"))
	s.Opts = packet.TCPOptions{HasTS: true, TSVal: h.peerTS - 5}
	h.in(s)
	if h.tcb.rcvBuf.len() != 4 {
		t.Fatal("segment rejected by an expired TS.Recent (RFC 7323 §5.5)")
	}
	if h.tcb.tsRecent != h.peerTS-5 {
		t.Fatal("TS.Recent not replaced after expiry")
	}
}

func TestEstablished_SegmentWithoutTimestampIsDropped(t *testing.T) {
	h := established(t)
	h.noTS = true
	h.in(h.data([]byte("x")))
	h.none()
	h.wantDrop(dropNoTimestamp)
}

func TestEstablished_TSRecentUpdatedOnlyForSegmentsCoveringLastAckSent(t *testing.T) {
	h := established(t)
	before := h.tcb.tsRecent
	// Out-of-order segment: SEG.SEQ > Last.ACK.sent, TS.Recent unchanged.
	s := h.ack()
	s.Seq = h.peerNxt.Add(100)
	s.Payload = []byte("later")
	h.in(s)
	if h.tcb.tsRecent != before {
		t.Fatal("TS.Recent taken from a segment beyond Last.ACK.sent")
	}
	h.in(h.ack())
	if h.tcb.tsRecent != h.peerTS {
		t.Fatalf("TS.Recent %d, want %d", h.tcb.tsRecent, h.peerTS)
	}
}

func TestEstablished_OutgoingSegmentsEchoTSRecent(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, 1448)))
	h.in(h.data(pattern(0, 1448)))
	a := h.one()
	if !a.Opts.HasTS || a.Opts.TSEcr != h.peerTS-1 {
		t.Fatalf("TSecr %d, want %d (the segment that covered Last.ACK.sent)", a.Opts.TSEcr, h.peerTS-1)
	}
	h.now = h.now.Add(1500 * time.Millisecond)
	h.tcb.Write([]byte("x"))
	h.output()
	if d := h.one(); d.Opts.TSVal != 0x1000+1500 {
		t.Fatalf("TSval %d, want offset+1500ms", d.Opts.TSVal)
	}
}

// --- Seventh step: text, ACK policy, reassembly. ---

func TestEstablished_DataIsDeliveredAcrossTheWrap(t *testing.T) {
	h := established(t)
	want := pattern(0, 3000)
	h.in(h.data(want[:1000]))
	h.in(h.data(want[1000:]))
	got := make([]byte, 4000)
	n, _ := h.tcb.Read(got)
	if string(got[:n]) != string(want) {
		t.Fatal("data corrupted")
	}
	if h.tcb.rcvNxt != testIRS.Add(3001) {
		t.Fatalf("RCV.NXT %d", h.tcb.rcvNxt)
	}
}

func TestEstablished_SingleSegmentAckIsDelayed(t *testing.T) {
	h := established(t)
	h.in(h.data([]byte("hi")))
	h.none()
	h.advance(39 * time.Millisecond)
	h.none()
	h.advance(time.Millisecond)
	wantAck(t, h.one(), h.peerNxt)
}

// TestEstablished_CoalescedSegmentIsAckedAtOnce: a segment larger than a
// full-sized one carries at least two of the sender's (coalesced on the
// way), so it is acknowledged at once, as the second of two would be.
func TestEstablished_CoalescedSegmentIsAckedAtOnce(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, h.cfg.MSS+100)))
	wantAck(t, h.one(), h.peerNxt)
}

func TestEstablished_EverySecondFullSegmentIsAckedAtOnce(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, 1448)))
	h.none()
	h.in(h.data(pattern(1448, 1448)))
	wantAck(t, h.one(), h.peerNxt)
	if h.tcb.delackAt != 0 {
		t.Fatal("delayed-ACK timer still armed after the ACK")
	}
}

func TestEstablished_NegativeDelayedAckAcksEverySegment(t *testing.T) {
	h := established(t, func(c *Config) { c.DelayedAck = -1 })
	h.in(h.data([]byte("a")))
	wantAck(t, h.one(), h.peerNxt)
}

func TestEstablished_OutOfOrderSegmentIsAckedAtOnceWithSACK(t *testing.T) {
	h := established(t)
	s := h.ack()
	s.Seq = h.peerNxt.Add(100)
	s.Payload = pattern(100, 50)
	h.in(s)
	a := h.one()
	wantAck(t, a, h.peerNxt)
	if a.Opts.NumSACK != 1 || Seq(a.Opts.SACKBlocks[0].Start) != s.Seq || Seq(a.Opts.SACKBlocks[0].End) != s.Seq.Add(50) {
		t.Fatalf("SACK %+v, want one block for the segment", a.Opts)
	}
	if h.stats.OutOfOrder.Load() != 1 {
		t.Error("OutOfOrder not counted")
	}
}

func TestEstablished_NoSACKBlocksWithoutSACKPermitted(t *testing.T) {
	h := established(t, func(c *Config) { c.SACK = false })
	s := h.ack()
	s.Seq = h.peerNxt.Add(100)
	s.Payload = pattern(100, 50)
	h.in(s)
	if a := h.one(); a.Opts.NumSACK != 0 {
		t.Fatal("SACK blocks sent without SACK-permitted")
	}
}

func TestEstablished_SACKBlocksListMostRecentFirst(t *testing.T) {
	h := established(t)
	base := h.peerNxt
	for _, off := range []uint32{100, 300, 500} {
		s := h.ack()
		s.Seq = base.Add(off)
		s.Payload = pattern(int(off), 50)
		h.in(s)
	}
	a := h.take()[2]
	if a.Opts.NumSACK != 3 {
		t.Fatalf("%d SACK blocks, want 3", a.Opts.NumSACK)
	}
	for i, off := range []uint32{500, 300, 100} {
		if Seq(a.Opts.SACKBlocks[i].Start) != base.Add(off) {
			t.Errorf("block %d starts at %d, want base+%d", i, a.Opts.SACKBlocks[i].Start, off)
		}
	}
}

func TestEstablished_FillingTheHoleDeliversEverythingAndAcksAtOnce(t *testing.T) {
	h := established(t)
	want := pattern(0, 600)
	base := h.peerNxt
	for _, off := range []int{400, 200} {
		s := h.ack()
		s.Seq = base.Add(uint32(off))
		s.Payload = want[off : off+200]
		h.in(s)
	}
	h.take()
	h.in(h.data(want[:200]))
	a := h.one()
	wantAck(t, a, base.Add(600))
	if a.Opts.NumSACK != 0 {
		t.Fatal("SACK blocks after the hole filled")
	}
	got := make([]byte, 1000)
	n, _ := h.tcb.Read(got)
	if string(got[:n]) != string(want) {
		t.Fatalf("read %d bytes, data mismatch", n)
	}
}

func TestEstablished_OverlappingOutOfOrderSegmentsMerge(t *testing.T) {
	h := established(t)
	want := pattern(0, 500)
	base := h.peerNxt
	for _, r := range [][2]int{{100, 300}, {250, 500}, {50, 150}} {
		s := h.ack()
		s.Seq = base.Add(uint32(r[0]))
		s.Payload = want[r[0]:r[1]]
		h.in(s)
	}
	if h.tcb.ooo.count() != 1 {
		t.Fatalf("%d ranges, want 1 merged", h.tcb.ooo.count())
	}
	h.in(h.data(want[:50]))
	got := make([]byte, 1000)
	n, _ := h.tcb.Read(got)
	if string(got[:n]) != string(want) {
		t.Fatalf("read %d bytes, data mismatch", n)
	}
}

// --- Eighth step: FIN. ---

func TestEstablished_FINGoesToCloseWaitAndReadReturnsEOFAfterData(t *testing.T) {
	h := established(t)
	h.in(h.data([]byte("last")))
	h.in(h.fin())
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(CloseWait)
	if e := h.tcb.Events(); e&EventPeerFIN == 0 {
		t.Fatal("no EventPeerFIN")
	}
	buf := make([]byte, 10)
	if n, err := h.tcb.Read(buf); n != 4 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if _, err := h.tcb.Read(buf); err != io.EOF {
		t.Fatalf("Read err %v, want io.EOF", err)
	}
}

func TestEstablished_FINWithDataIsProcessedAfterTheData(t *testing.T) {
	h := established(t)
	s := h.data([]byte("bye"))
	s.Flags |= packet.FIN
	h.peerNxt = h.peerNxt.Add(1)
	h.in(s)
	h.wantState(CloseWait)
	wantAck(t, h.one(), h.peerNxt)
}

func TestEstablished_FINBeyondAHoleWaitsForTheHole(t *testing.T) {
	h := established(t)
	base := h.peerNxt
	f := h.ack()
	f.Seq = base.Add(5)
	f.Payload = []byte("world")
	f.Flags |= packet.FIN
	h.in(f)
	h.wantState(Established)
	wantAck(t, h.one(), base)
	h.in(h.data([]byte("hello")))
	h.wantState(CloseWait)
	wantAck(t, h.one(), base.Add(11))
}

// --- Sending. ---

func TestEstablished_WriteSendsDataWithPSHFromSndNxt(t *testing.T) {
	h := established(t)
	n, err := h.tcb.Write([]byte("hello"))
	if n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	h.output()
	d := h.one()
	if d.Seq != testISS.Add(1) || d.Flags != packet.ACK|packet.PSH || string(d.Payload) != "hello" || d.Ack != h.peerNxt {
		t.Fatalf("sent %v %q", d.String(), d.Payload)
	}
}

func TestEstablished_SegmentsAreMSSLessTimestampOption(t *testing.T) {
	h := established(t)
	h.tcb.Write(pattern(0, 5000))
	h.output()
	segs := h.take()
	// The 656-byte tail waits for an ACK (Nagle).
	if len(segs) != 3 || len(segs[0].Payload) != 1448 || len(segs[2].Payload) != 1448 {
		t.Fatalf("segments %v, want 3x1448", segsString(segs))
	}
	for i := 1; i < len(segs); i++ {
		if segs[i].Seq != segs[i-1].Seq.Add(uint32(len(segs[i-1].Payload))) {
			t.Fatal("segments not contiguous")
		}
	}
}

func TestEstablished_AckFreesSendBufferAndSignalsWritable(t *testing.T) {
	h := established(t, func(c *Config) { c.SendBufSize = 1000 })
	n, _ := h.tcb.Write(pattern(0, 2000))
	if n != 1000 {
		t.Fatalf("Write took %d, want 1000 (buffer size)", n)
	}
	if n, err := h.tcb.Write([]byte("x")); n != 0 || err != nil {
		t.Fatalf("Write on full buffer = %d, %v; want 0, nil", n, err)
	}
	h.output()
	h.take()
	h.tcb.Events()
	h.in(h.ack())
	if e := h.tcb.Events(); e&EventWritable == 0 {
		t.Fatal("no EventWritable after ACK")
	}
	if h.tcb.sndBuf.free() != 1000 {
		t.Fatal("ACK did not free the buffer")
	}
}

func TestEstablished_NagleHoldsSmallSegmentWhileDataIsUnacked(t *testing.T) {
	h := established(t)
	h.tcb.Write([]byte("a"))
	h.output()
	h.one()
	h.tcb.Write([]byte("b"))
	h.output()
	h.none()
	h.in(h.ack())
	if d := h.one(); string(d.Payload) != "b" {
		t.Fatalf("sent %q after ACK, want b", d.Payload)
	}
}

func TestEstablished_NoDelaySendsSmallSegmentsAtOnce(t *testing.T) {
	h := established(t, func(c *Config) { c.NoDelay = true })
	h.tcb.Write([]byte("a"))
	h.output()
	h.one()
	h.tcb.Write([]byte("b"))
	h.output()
	if d := h.one(); string(d.Payload) != "b" {
		t.Fatalf("sent %q, want b", d.Payload)
	}
}

func TestEstablished_SendIsLimitedByPeerWindow(t *testing.T) {
	h := established(t)
	a := h.ack()
	a.Wnd = 20 // 20<<7 = 2560 bytes
	h.in(a)
	h.tcb.Write(pattern(0, 10000))
	h.output()
	total := 0
	for _, s := range h.take() {
		total += len(s.Payload)
	}
	// One full segment; the 1112 bytes left in the window are too few
	// for sender SWS avoidance while data is in flight.
	if total != 1448 {
		t.Fatalf("sent %d bytes into a 2560-byte window, want 1448", total)
	}
	a = h.ackOf(h.tcb.sndMax)
	a.Wnd = 20
	h.in(a)
	total = 0
	for _, s := range h.take() {
		total += len(s.Payload)
	}
	if total > 2560 || total == 0 {
		t.Fatalf("sent %d bytes after the ACK, want 1..2560", total)
	}
}

// --- Window advertisement. ---

func TestEstablished_WindowIsScaledFreeSpace(t *testing.T) {
	h := established(t)
	h.in(h.data(pattern(0, 1448)))
	h.in(h.data(pattern(0, 1448)))
	a := h.one()
	want := uint16((64<<10 - 2*1448) >> 7)
	if a.Wnd != want {
		t.Fatalf("window %d, want %d", a.Wnd, want)
	}
}

func TestEstablished_RightEdgeNeverMovesLeft(t *testing.T) {
	h := established(t, smallWindow)
	var edge Seq
	for i := range 8 {
		h.in(h.data(pattern(i*500, 500)))
		h.advance(time.Second)
		for _, s := range h.take() {
			e := s.Ack.Add(uint32(s.Wnd))
			if i > 0 && e.LessThan(edge) {
				t.Fatalf("right edge moved left: %d < %d", e, edge)
			}
			edge = e
		}
	}
}

func TestEstablished_ReadOpeningTheWindowSendsUpdate(t *testing.T) {
	h := established(t, smallWindow)
	h.in(h.data(pattern(0, 4000)))
	h.advance(time.Second)
	if a := h.one(); a.Wnd != 0 {
		t.Fatalf("window %d, want 0", a.Wnd)
	}
	buf := make([]byte, 100)
	h.tcb.Read(buf) // 100 bytes: below SWS threshold
	h.output()
	h.none()
	h.tcb.Read(make([]byte, 4000))
	h.output()
	if a := h.one(); a.Wnd != 4000 {
		t.Fatalf("window update %d, want 4000", a.Wnd)
	}
}

func TestEstablished_ReceiverSWSAvoidanceHoldsSmallIncrease(t *testing.T) {
	h := established(t, smallWindow)
	h.in(h.data(pattern(0, 4000)))
	h.advance(time.Second)
	h.take()
	h.tcb.Read(make([]byte, 10))
	h.in(h.ack()) // any reason to send an ACK: a window probe, say
	h.tcb.ackNow = true
	h.output()
	if a := h.one(); a.Wnd != 0 {
		t.Fatalf("window %d after reading 10 bytes, want 0 (SWS avoidance)", a.Wnd)
	}
}

// --- Application errors. ---

func TestEstablished_WriteAfterCloseWriteIsErrClosed(t *testing.T) {
	h := established(t)
	h.tcb.CloseWrite()
	if _, err := h.tcb.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("err %v, want net.ErrClosed", err)
	}
}

func TestEstablished_ReadWouldBlockReturnsZeroNil(t *testing.T) {
	h := established(t)
	if n, err := h.tcb.Read(make([]byte, 1)); n != 0 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if h.tcb.Readable() {
		t.Fatal("Readable with nothing to read")
	}
}

func TestEstablished_CloseWithUnreadDataSendsRST(t *testing.T) {
	h := established(t)
	h.in(h.data([]byte("unread")))
	h.take()
	h.tcb.Close()
	h.output()
	r := h.one()
	if r.Flags&packet.RST == 0 || r.Seq != h.tcb.sndMax {
		t.Fatalf("sent %v, want RST", r.String())
	}
	h.wantState(Closed)
	if h.stats.RSTsSent.Load() != 1 {
		t.Error("RSTsSent not counted")
	}
}

func TestEstablished_CloseReadThenDataIsAckedAndDropped(t *testing.T) {
	h := established(t)
	h.tcb.CloseRead()
	h.in(h.data(pattern(0, 1448)))
	h.in(h.data(pattern(0, 1448)))
	wantAck(t, h.one(), h.peerNxt)
	if _, err := h.tcb.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("Read err %v, want EOF after CloseRead", err)
	}
	h.tcb.Close()
	h.output()
	if r := h.one(); r.Flags&packet.RST == 0 {
		t.Fatal("Close after discarding unread data did not reset")
	}
}

func TestEstablished_AbortSendsRSTAndFailsIO(t *testing.T) {
	h := established(t)
	h.tcb.Abort()
	h.output()
	if r := h.one(); r.Flags != packet.RST|packet.ACK || r.Seq != h.tcb.sndMax || r.Ack != h.peerNxt {
		t.Fatalf("sent %v, want RST|ACK", r.String())
	}
	if _, err := h.tcb.Write([]byte("x")); !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("Write err %v", err)
	}
	h.output()
	h.none()
}

func TestEstablished_TraceReportsTransitions(t *testing.T) {
	h := established(t)
	var got []TraceEvent
	for _, e := range h.traces {
		if e.Kind == TraceState {
			got = append(got, e)
		}
	}
	if len(got) != 1 || got[0].From != SynReceived || got[0].To != Established || got[0].Reason != "ACK of SYN-ACK" {
		t.Fatalf("transitions %+v", got)
	}
}

// A small request read right after the handshake leaves the peer most of
// the window the SYN-ACK offered (64 KiB, unscaled): no pure ACK just to
// announce the larger buffer; the response carries the ACK and the window.
func TestEstablished_FirstSmallReadSendsNoWindowUpdate(t *testing.T) {
	h := established(t, func(c *Config) { c.RecvBufSize = 256 << 10 })
	h.in(h.data(pattern(0, 23)))
	h.output()
	h.none()
	if n, err := h.tcb.Read(make([]byte, 100)); n != 23 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	h.output()
	h.none()
	h.tcb.Write(pattern(0, 27))
	h.output()
	s := h.one()
	if s.Ack != testIRS.Add(1+23) || len(s.Payload) != 27 {
		t.Fatalf("response %v, want 27 bytes", s.String())
	}
	if wnd := uint32(s.Wnd) << h.tcb.rcvShift; wnd <= 65535 {
		t.Fatalf("response announces %d bytes of window, want the larger buffer", wnd)
	}
}

// A window closed to less than one scale unit reads as 0 to the peer,
// however much of it is left in bytes: the read that opens it sends the
// update at once, or the peer waits for its persist timer.
func TestEstablished_ReadOpeningANearlyClosedScaledWindowSendsUpdate(t *testing.T) {
	h := established(t, func(c *Config) { c.RecvBufSize, c.RecvBufMax = 64<<10, 4<<20 })
	shift := h.tcb.rcvShift
	if shift < 7 {
		t.Fatalf("window scale %d, want at least 7", shift)
	}
	left := 100 // less than one unit of the scaled field
	total := int(h.tcb.rcvWnd()) - left
	for off := 0; off < total; off += 1448 {
		h.in(h.data(pattern(off, min(1448, total-off))))
	}
	h.advance(time.Second)
	h.take()
	if w := h.tcb.rcvWnd(); int(w) != left {
		t.Fatalf("window left %d, want %d", w, left)
	}
	if n, err := h.tcb.Read(make([]byte, total)); n != total || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	h.output()
	if a := h.one(); uint32(a.Wnd)<<shift < 32<<10 {
		t.Fatalf("window update announces %d bytes", uint32(a.Wnd)<<shift)
	}
}
