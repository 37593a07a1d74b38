package tcp

import (
	"slices"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// firstSendLoss drops the first transmission of side 0's data segments
// whose index (stream offset / seg) lies in lost; retransmissions pass.
// It reports the bytes it dropped.
func firstSendLoss(lost map[int]bool, seg int, dropped *int) func(int, *Segment) bool {
	var highest Seq
	started := false
	return func(from int, s *Segment) bool {
		if from != 0 || len(s.Payload) == 0 {
			return false
		}
		end := s.Seq.Add(uint32(len(s.Payload)))
		if started && !end.GreaterThan(highest) {
			return false // a retransmission
		}
		started, highest = true, end
		if lost[int(uint32(s.Seq-testISS-1))/seg] {
			*dropped += len(s.Payload)
			return true
		}
		return false
	}
}

func TestPair_SACKRetransmitsNoMoreThanNewRenoForTheSameLosses(t *testing.T) {
	every := func(from, to, step int, more ...int) map[int]bool {
		m := map[int]bool{}
		for i := from; i < to; i += step {
			m[i] = true
		}
		for _, i := range more {
			m[i] = true
		}
		return m
	}
	patterns := []struct {
		name string
		lost map[int]bool
		// multi: several holes per window, where NewReno repairs one per
		// round trip or times out and resends what arrived.
		multi bool
	}{
		{"one in three for 60 segments, then a burst", every(60, 120, 3, 400, 401, 403), true},
		// Since NewReno has Limited Transmit (RFC 3042) it repairs these
		// bursts without a timeout, as SACK does, and resends no more.
		{"bursts of holes in large windows", every(0, 0, 1, 150, 152, 155, 156, 160, 171, 300, 301, 302, 310, 318, 500, 505, 510, 515, 520), false},
		{"single losses", every(100, 700, 97), false},
	}
	for _, pt := range patterns {
		run := func(sack bool) (rtxBytes, dropped int, rtos uint64) {
			p := newPair(t, 9, func(c *Config) { c.SACK = sack })
			p.links = [2]link{{delay: 5 * time.Millisecond}, {delay: 5 * time.Millisecond}}
			p.drop = firstSendLoss(pt.lost, segSize, &dropped)
			p.transfer(1<<20, 0, 10*time.Minute)
			return int(p.stats[0].RetransmittedBytes.Load()), dropped, p.stats[0].RTOs.Load()
		}
		sackBytes, sackDropped, sackRTOs := run(true)
		renoBytes, renoDropped, renoRTOs := run(false)
		t.Logf("%s: SACK retransmitted %d bytes for %d lost, %d RTOs; NewReno %d for %d, %d RTOs",
			pt.name, sackBytes, sackDropped, sackRTOs, renoBytes, renoDropped, renoRTOs)
		if sackDropped == 0 || sackDropped != renoDropped {
			t.Fatalf("%s: the runs lost %d and %d bytes, want the same pattern", pt.name, sackDropped, renoDropped)
		}
		if sackBytes > sackDropped+2*segSize {
			t.Errorf("%s: SACK retransmitted %d bytes for %d lost, want little more than the holes", pt.name, sackBytes, sackDropped)
		}
		if sackBytes > renoBytes+segSize {
			t.Errorf("%s: SACK retransmitted %d bytes, NewReno %d: want no more with SACK", pt.name, sackBytes, renoBytes)
		}
		if sackRTOs > renoRTOs {
			t.Errorf("%s: %d timeouts with SACK, %d without: want no more", pt.name, sackRTOs, renoRTOs)
		}
		// Several holes per window: NewReno repairs one per round trip
		// (RFC 6582) or times out and resends what had arrived; SACK
		// resends only the holes (RFC 6675).
		if pt.multi && sackBytes >= renoBytes {
			t.Errorf("%s: SACK retransmitted %d bytes, NewReno %d: want fewer with SACK", pt.name, sackBytes, renoBytes)
		}
	}
}

// --- RFC 6675 unit tests on one TCB, the peer played by hand. ---

// segSize is the payload of a full segment: MSS 1460 less timestamps.
const segSize = 1448

// segAt is the sequence number of our i-th data segment.
func segAt(i int) Seq { return testISS.Add(1 + uint32(i*segSize)) }

// sackRecoveryTCB is ESTABLISHED with SACK, NewReno (cwnd halves exactly
// on recovery), and n full segments sent at once.
func sackRecoveryTCB(t *testing.T, n int) *harness {
	t.Helper()
	h := established(t, func(c *Config) { c.CongestionControl = "newreno" })
	if got := len(h.sent(n * segSize)); got != n {
		t.Fatalf("sent %d segments, want %d", got, n)
	}
	return h
}

// sackOf is an ACK of ack carrying SACK blocks, each [first, end) in
// segment indexes, in the order given (RFC 2018: most recent first).
func (h *harness) sackOf(ack Seq, blocks ...[2]int) Segment {
	s := h.ackOf(ack)
	for _, b := range blocks {
		s.Opts.SACKBlocks[s.Opts.NumSACK] = packet.SACKBlock{Start: uint32(segAt(b[0])), End: uint32(segAt(b[1]))}
		s.Opts.NumSACK++
	}
	return s
}

// segIndexes lists the segment index of each data segment in segs.
func segIndexes(t *testing.T, segs []Segment) []int {
	t.Helper()
	var idx []int
	for _, s := range segs {
		if len(s.Payload) == 0 {
			continue
		}
		off := uint32(s.Seq - segAt(0))
		if off%segSize != 0 || len(s.Payload) != segSize {
			t.Fatalf("segment %v is not one full segment", s.String())
		}
		idx = append(idx, int(off/segSize))
	}
	return idx
}

func TestSACKRecovery_EntersOnThirdDupAck(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	// Segment 0 is lost; 1, 2 and 3 arrive, each ACK SACKs one more.
	h.in(h.sackOf(segAt(0), [2]int{1, 2}))
	h.in(h.sackOf(segAt(0), [2]int{1, 3}))
	h.none()
	if h.tcb.inRecovery || h.tcb.dupAcks != 2 {
		t.Fatalf("recovery %v after 2 duplicates (counted %d)", h.tcb.inRecovery, h.tcb.dupAcks)
	}
	sndMax := h.tcb.sndMax
	h.in(h.sackOf(segAt(0), [2]int{1, 4}))
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{0}) {
		t.Fatalf("third duplicate sent segments %v, want [0] (RFC 6675 §5 (4.3))", got)
	}
	if !h.tcb.inRecovery || !h.tcb.sackRecovery || h.tcb.recover != sndMax {
		t.Fatalf("recovery %v sack %v RecoveryPoint %d, want SACK recovery up to SND.MAX %d", h.tcb.inRecovery, h.tcb.sackRecovery, h.tcb.recover, sndMax)
	}
	// (4.2): ssthresh = cwnd = FlightSize/2; no RFC 5681 inflation.
	if c := h.tcb.cc.cwnd(); c != 5*segSize || h.tcb.cc.ssthresh() != c {
		t.Fatalf("cwnd %d ssthresh %d, want both %d", c, h.tcb.cc.ssthresh(), 5*segSize)
	}
	if h.tcb.highRxt != segAt(1) || h.tcb.rescueRxt != segAt(1) {
		t.Fatalf("HighRxt/RescueRxt at %d/%d, want the end of segment 0", h.tcb.highRxt-segAt(0), h.tcb.rescueRxt-segAt(0))
	}
	if h.stats.FastRetransmits.Load() != 1 {
		t.Fatalf("FastRetransmits %d", h.stats.FastRetransmits.Load())
	}
}

func TestSACKRecovery_EntersOnFirstDupAckWhenIsLost(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	// One ACK SACKs three segments: IsLost(HighACK+1) (RFC 6675 §5 (2)).
	h.in(h.sackOf(segAt(0), [2]int{1, 4}))
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{0}) || !h.tcb.inRecovery {
		t.Fatalf("sent %v, recovery %v; want segment 0 retransmitted in recovery", got, h.tcb.inRecovery)
	}
}

func TestSACKRecovery_TwoSegmentsSACKedIsNotYetLoss(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	h.in(h.sackOf(segAt(0), [2]int{1, 3}))
	if h.tcb.inRecovery {
		t.Fatal("recovery after one duplicate SACKing 2 segments: IsLost needs more than 2*SMSS")
	}
}

func TestSACKRecovery_AckWithoutNewSACKInfoIsNotDuplicate(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	for range 3 {
		h.in(h.sackOf(segAt(0), [2]int{5, 6})) // the same block again
	}
	if h.tcb.dupAcks != 1 || h.tcb.inRecovery {
		t.Fatalf("counted %d duplicates, recovery %v; want 1 (RFC 6675 §2)", h.tcb.dupAcks, h.tcb.inRecovery)
	}
}

func TestSACKRecovery_RetransmitsExactlyTheHoles(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	// Segments 0, 2 and 4 are lost; each arrival of the others brings an
	// ACK with up to three blocks, the newest first.
	acks := [][][2]int{
		{{1, 2}},
		{{3, 4}, {1, 2}},
		{{5, 6}, {3, 4}, {1, 2}},
		{{5, 7}, {3, 4}, {1, 2}},
		{{5, 8}, {3, 4}, {1, 2}},
		{{5, 9}, {3, 4}, {1, 2}},
		{{5, 10}, {3, 4}, {1, 2}},
	}
	var sent []int
	for _, blocks := range acks {
		h.in(h.sackOf(segAt(0), blocks...))
		sent = append(sent, segIndexes(t, h.take())...)
	}
	if !slices.Equal(sent, []int{0, 2, 4}) {
		t.Fatalf("retransmitted segments %v, want exactly the holes [0 2 4], each once", sent)
	}
	if h.stats.RetransmittedBytes.Load() != 3*segSize {
		t.Fatalf("RetransmittedBytes %d, want %d", h.stats.RetransmittedBytes.Load(), 3*segSize)
	}
}

func TestSACKRecovery_NewDataFillsThePipe(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	h.tcb.Write(pattern(0, 10*segSize))
	h.in(h.sackOf(segAt(0), [2]int{1, 4}))
	// cwnd 5: segment 0 retransmitted, 4..9 in the pipe (6) + 1 = 7 > 5.
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{0}) {
		t.Fatalf("sent %v, want [0]", got)
	}
	h.in(h.sackOf(segAt(0), [2]int{1, 8}))
	// Now 4..7 are SACKed too: pipe = 0 (retransmitted) + 8, 9 = 3; two
	// new segments fit (NextSeg rule (2)).
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{10, 11}) {
		t.Fatalf("sent %v, want new segments [10 11]", got)
	}
	if h.tcb.sndMax != segAt(12) {
		t.Fatalf("SND.MAX at segment %d, want 12", (h.tcb.sndMax-segAt(0))/segSize)
	}
}

func TestSACKRecovery_EndsWhenRecoveryPointIsAcked(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	h.in(h.sackOf(segAt(0), [2]int{1, 4}, [2]int{5, 10}))
	h.take()
	point := h.tcb.recover
	h.in(h.sackOf(segAt(4), [2]int{5, 10})) // partial: segment 4 still missing
	if !h.tcb.inRecovery {
		t.Fatal("partial ACK ended recovery")
	}
	h.take()
	h.in(h.ackOf(point.Add(^uint32(0))))
	if !h.tcb.inRecovery {
		t.Fatal("ACK one below RecoveryPoint ended recovery")
	}
	h.in(h.ackOf(point))
	if h.tcb.inRecovery || h.tcb.sackRecovery {
		t.Fatal("still in recovery after RecoveryPoint was acknowledged (RFC 6675 (A))")
	}
	if h.tcb.cc.cwnd() != h.tcb.cc.ssthresh() {
		t.Fatalf("cwnd %d after recovery, want ssthresh %d", h.tcb.cc.cwnd(), h.tcb.cc.ssthresh())
	}
}

func TestSACKRecovery_RescueRetransmissionOncePerRecovery(t *testing.T) {
	h := sackRecoveryTCB(t, 8)
	// 0, 5, 6 and 7 are lost: the tail of the window.
	h.in(h.sackOf(segAt(0), [2]int{1, 4}))
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{0}) {
		t.Fatalf("entering recovery sent %v, want [0]", got)
	}
	h.in(h.sackOf(segAt(0), [2]int{1, 5}))
	h.none() // pipe: 0 again, 5..7 = 4 segments = cwnd
	// The retransmitted 0 arrives: HighACK passes RescueRxt; nothing is
	// SACKed and there is no new data: rule (4) sends the highest
	// outstanding segment.
	h.in(h.ackOf(segAt(5)))
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{7}) {
		t.Fatalf("after the partial ACK sent %v, want the rescue [7]", got)
	}
	if h.tcb.rescueRxt != h.tcb.recover || h.tcb.highRxt != segAt(1) {
		t.Fatal("rescue must set RescueRxt = RecoveryPoint and leave HighRxt")
	}
	// 7 arrives: 5 and 6 go by rule (3).
	h.in(h.sackOf(segAt(5), [2]int{7, 8}))
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{5, 6}) {
		t.Fatalf("after the SACK of 7 sent %v, want [5 6]", got)
	}
	// 5 arrives: another partial ACK, but the rescue is used up.
	h.in(h.sackOf(segAt(6), [2]int{7, 8}))
	h.none()
	h.in(h.ackOf(segAt(8)))
	if h.tcb.inRecovery {
		t.Fatal("recovery did not end")
	}
}

func TestSACKRecovery_RTOExpungesScoreboardAndGoBackNSkipsSACKed(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	h.in(h.sackOf(segAt(0), [2]int{3, 6}))
	h.take()
	if !h.tcb.sacked() {
		t.Fatal("scoreboard empty after a SACK")
	}
	h.advance(h.tcb.Deadline().Sub(h.now))
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{0}) {
		t.Fatalf("timeout sent %v, want [0]", got)
	}
	if h.tcb.sacked() || h.tcb.inRecovery {
		t.Fatal("the timeout kept SACK state (RFC 2018 §8, RFC 6675 §5.1)")
	}
	// 0 arrives; 1 and 2 are missing, 3..9 held: go-back-N resends 1 and
	// 2 only.
	h.in(h.sackOf(segAt(1), [2]int{3, 10}))
	sent := segIndexes(t, h.take())
	h.in(h.sackOf(segAt(2), [2]int{3, 10}))
	sent = append(sent, segIndexes(t, h.take())...)
	if !slices.Equal(sent, []int{1, 2}) {
		t.Fatalf("go-back-N sent %v, want [1 2]", sent)
	}
	h.in(h.ackOf(segAt(10)))
	h.none()
	if h.tcb.sndUna != h.tcb.sndMax {
		t.Fatal("not everything acknowledged")
	}
}

func TestSACKRecovery_PeerWithoutSACKBlocksGetsNewReno(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	for range 3 {
		h.in(h.dupAck())
	}
	if got := segIndexes(t, h.take()); !slices.Equal(got, []int{0}) || !h.tcb.inRecovery || h.tcb.sackRecovery {
		t.Fatalf("sent %v recovery %v sack %v: want NewReno fast retransmit of 0", got, h.tcb.inRecovery, h.tcb.sackRecovery)
	}
}

func TestSACKRecovery_WithoutSACKNegotiatedSACKBlocksAreIgnored(t *testing.T) {
	h := established(t, func(c *Config) { c.SACK = false })
	h.sent(10 * segSize)
	h.in(h.sackOf(segAt(0), [2]int{1, 4}))
	if h.tcb.sacked() || h.tcb.inRecovery {
		t.Fatal("SACK blocks used although SACK was not negotiated")
	}
}

func TestSACKRecovery_DoesNotAllocate(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	h.tcb.SetTrace(nil)
	emit := func(*Segment) {}
	acks := []Segment{
		h.sackOf(segAt(0), [2]int{1, 2}),
		h.sackOf(segAt(0), [2]int{3, 4}, [2]int{1, 2}),
		h.sackOf(segAt(0), [2]int{5, 10}, [2]int{3, 4}, [2]int{1, 2}),
	}
	for i := range acks {
		acks[i].Opts.HasTS, acks[i].Opts.TSVal, acks[i].Opts.TSEcr = true, h.peerTS, 1
	}
	allocs := testing.AllocsPerRun(50, func() {
		if h.tcb.sb != nil {
			h.tcb.sb.reset()
		}
		h.tcb.inRecovery, h.tcb.sackRecovery, h.tcb.recover = false, false, h.tcb.sndUna
		for i := range acks {
			h.tcb.Input(&acks[i], h.now)
			h.tcb.Output(h.now, emit)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations", allocs)
	}
}

func TestSACKRecovery_LossRightAfterRecoveryDoesNotRaiseCwnd(t *testing.T) {
	h := sackRecoveryTCB(t, 10)
	h.tcb.Write(pattern(0, 60*segSize))
	h.output()
	h.take()
	// 0 and 10 are lost; everything else arrives and is SACKed, which lets
	// recovery send new data while SND.MAX - SND.UNA grows far beyond cwnd.
	h.in(h.sackOf(segAt(0), [2]int{1, 10}))
	top := 0
	for range 8 {
		top = int((h.tcb.sndMax - segAt(0)) / segSize)
		h.in(h.sackOf(segAt(0), [2]int{11, top}, [2]int{1, 10}))
	}
	h.take()
	h.in(h.sackOf(segAt(10), [2]int{11, top})) // 0 arrives: recovery ends
	if h.tcb.inRecovery {
		t.Fatal("recovery did not end at RecoveryPoint")
	}
	cwnd := h.tcb.cc.cwnd()
	if flight := h.tcb.flight(); flight <= 2*cwnd {
		t.Fatalf("flight %d, cwnd %d: the test needs flight > 2*cwnd", flight, cwnd)
	}
	h.take()
	top = int((h.tcb.sndMax - segAt(0)) / segSize)
	h.in(h.sackOf(segAt(10), [2]int{11, top})) // new SACK info: 10 is lost
	if !h.tcb.inRecovery {
		t.Fatal("no new recovery for the second loss")
	}
	if got := h.tcb.cc.cwnd(); got >= cwnd {
		t.Fatalf("cwnd %d after a new loss, was %d: a loss must not raise it", got, cwnd)
	}
}

func TestSACKRecovery_LostRetransmissionIsSentAgainWithoutATimeout(t *testing.T) {
	run := func(t *testing.T, lostCopies int) (rtos, lostRtx uint64) {
		p := newPair(t, 11, nil)
		p.links = [2]link{{delay: 5 * time.Millisecond}, {delay: 5 * time.Millisecond}}
		sent := map[Seq]int{}
		p.drop = func(from int, s *Segment) bool {
			if from != 0 || len(s.Payload) == 0 || int(uint32(s.Seq-testISS-1))/segSize != 200 {
				return false
			}
			sent[s.Seq]++
			return sent[s.Seq] <= lostCopies // the original, then lostCopies-1 retransmissions
		}
		p.transfer(2<<20, 0, 10*time.Minute)
		return p.stats[0].RTOs.Load(), p.stats[0].LostRetransmits.Load()
	}
	if rtos, lost := run(t, 1); rtos != 0 || lost != 0 {
		t.Fatalf("one loss: %d RTOs, %d lost retransmissions", rtos, lost)
	}
	// The retransmission is lost too: data sent after it is SACKed, which
	// shows it lost, and it goes out again at once.
	if rtos, lost := run(t, 2); rtos != 0 || lost != 1 {
		t.Fatalf("lost retransmission: %d RTOs, %d lost retransmissions detected; want 0 and 1", rtos, lost)
	}
}
