package tcp

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// sent writes n bytes and returns the segments that went out at once.
func (h *harness) sent(n int) []Segment {
	h.tcb.Write(pattern(0, n))
	h.output()
	return h.take()
}

func TestRTO_IsMinRTOAfterSubMillisecondHandshake(t *testing.T) {
	h := established(t)
	if h.tcb.currentRTO() != 200*time.Millisecond {
		t.Fatalf("RTO %v, want MinRTO", h.tcb.currentRTO())
	}
}

func TestRTO_RetransmitsFirstUnackedSegment(t *testing.T) {
	h := established(t, func(c *Config) { c.TailLossProbe = false })
	if n := len(h.sent(2 * 1448)); n != 2 {
		t.Fatalf("%d segments, want 2", n)
	}
	h.advance(199 * time.Millisecond)
	h.none()
	h.advance(time.Millisecond)
	r := h.one() // cwnd is one segment after a timeout
	if r.Seq != testISS.Add(1) || len(r.Payload) != 1448 {
		t.Fatalf("retransmitted %v", r.String())
	}
	if h.stats.RTOs.Load() != 1 || h.stats.Retransmits.Load() != 1 {
		t.Fatalf("RTOs %d Retransmits %d", h.stats.RTOs.Load(), h.stats.Retransmits.Load())
	}
}

func TestRTO_GoBackNResendsTheRestAsAcksArrive(t *testing.T) {
	h := established(t)
	h.sent(3 * 1448)
	h.advance(200 * time.Millisecond)
	h.one()
	h.in(h.ackOf(testISS.Add(1 + 1448)))
	segs := h.take()
	if len(segs) == 0 || segs[0].Seq != testISS.Add(1+1448) {
		t.Fatalf("after the ACK sent %v, want the second segment again", segsString(segs))
	}
}

func TestRTO_BacksOffExponentially(t *testing.T) {
	h := established(t)
	h.sent(100)
	for _, d := range []time.Duration{200, 400, 800, 1600} {
		h.advance(d*time.Millisecond - time.Millisecond)
		h.none()
		h.advance(time.Millisecond)
		h.one()
	}
}

func TestRTO_IsCappedAtMaxRTO(t *testing.T) {
	h := established(t, func(c *Config) { c.MaxRTO = time.Second })
	h.sent(100)
	for range 8 {
		d := h.tcb.Deadline().Sub(h.now)
		if d > time.Second {
			t.Fatalf("RTO %v above MaxRTO", d)
		}
		h.advance(d)
		h.one()
	}
}

func TestRTO_NewAckEndsBackoff(t *testing.T) {
	h := established(t)
	h.sent(200)
	h.advance(200 * time.Millisecond)
	h.advance(400 * time.Millisecond)
	h.take()
	h.in(h.ackOf(testISS.Add(101)))
	if h.tcb.backoff != 0 {
		t.Fatalf("backoff %d after new ACK", h.tcb.backoff)
	}
	if d := h.tcb.Deadline().Sub(h.now); d > 300*time.Millisecond {
		t.Fatalf("timer restarted with %v, want about RTO", d)
	}
}

func TestRTO_StopsWhenEverythingIsAcked(t *testing.T) {
	h := established(t)
	h.sent(100)
	h.in(h.ack())
	if h.tcb.rtoAt != 0 {
		t.Fatal("timer armed with nothing outstanding")
	}
}

func TestRTO_GivesUpAfterMaxRetransmits(t *testing.T) {
	h := established(t, func(c *Config) { c.MaxRetransmits = 3 })
	h.sent(100)
	for range 4 {
		h.advance(h.tcb.Deadline().Sub(h.now))
	}
	h.wantState(Closed)
	if !errors.Is(h.tcb.Err(), syscall.ETIMEDOUT) || h.tcb.Reason() != "retransmissions exhausted" {
		t.Fatalf("Err %v reason %q", h.tcb.Err(), h.tcb.Reason())
	}
	if _, err := h.tcb.Write([]byte("x")); !errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("Write err %v", err)
	}
}

func TestRTT_EstimatorFollowsRFC6298(t *testing.T) {
	h := established(t, func(c *Config) { c.Timestamps = false })
	h.tcb.hasSample = false
	h.tcb.rttSample(100 * time.Millisecond)
	if h.tcb.srtt != 100*time.Millisecond || h.tcb.rttvar != 50*time.Millisecond || h.tcb.rto != 300*time.Millisecond {
		t.Fatalf("first sample: srtt %v rttvar %v rto %v", h.tcb.srtt, h.tcb.rttvar, h.tcb.rto)
	}
	h.tcb.rttSample(200 * time.Millisecond)
	if h.tcb.srtt != 112500*time.Microsecond || h.tcb.rttvar != 62500*time.Microsecond || h.tcb.rto != 362500*time.Microsecond {
		t.Fatalf("second sample: srtt %v rttvar %v rto %v", h.tcb.srtt, h.tcb.rttvar, h.tcb.rto)
	}
}

func TestRTT_KarnIgnoresAcksOfRetransmittedData(t *testing.T) {
	h := established(t, func(c *Config) { c.Timestamps = false })
	srtt := h.tcb.srtt
	h.sent(100)
	h.advance(200 * time.Millisecond)
	h.one()
	h.advance(50 * time.Millisecond)
	h.in(h.ack())
	if h.tcb.srtt != srtt {
		t.Fatalf("SRTT changed to %v from a retransmitted segment", h.tcb.srtt)
	}
}

func TestRTT_TimedSegmentGivesSample(t *testing.T) {
	h := established(t, func(c *Config) { c.Timestamps = false })
	h.sent(100)
	h.advance(80 * time.Millisecond)
	h.in(h.ack())
	if h.tcb.srtt != 10*time.Millisecond { // 7/8*0 + 1/8*80
		t.Fatalf("SRTT %v, want 10ms", h.tcb.srtt)
	}
}

func TestRTT_TimestampEchoGivesSample(t *testing.T) {
	h := established(t)
	s := h.sent(100)
	h.advance(80 * time.Millisecond)
	a := h.ack()
	a.Opts = packet.TCPOptions{HasTS: true, TSVal: h.peerTS + 1, TSEcr: s[0].Opts.TSVal}
	h.in(a)
	if h.tcb.srtt != 10*time.Millisecond {
		t.Fatalf("SRTT %v, want 10ms", h.tcb.srtt)
	}
}

// dupAck is a duplicate ACK of SND.UNA.
func (h *harness) dupAck() Segment { return h.ackOf(h.tcb.sndUna) }

func TestFastRetransmit_OnThirdDupAck(t *testing.T) {
	h := established(t)
	h.sent(5 * 1448)
	h.in(h.dupAck())
	h.in(h.dupAck())
	h.none()
	h.in(h.dupAck())
	r := h.one()
	if r.Seq != testISS.Add(1) || len(r.Payload) != 1448 {
		t.Fatalf("fast retransmit %v", r.String())
	}
	if h.stats.FastRetransmits.Load() != 1 || h.stats.DupAcks.Load() != 3 {
		t.Fatalf("FastRetransmits %d DupAcks %d", h.stats.FastRetransmits.Load(), h.stats.DupAcks.Load())
	}
	if !h.tcb.inRecovery || h.tcb.recover != h.tcb.sndMax {
		t.Fatal("not in recovery with recover = SND.NXT")
	}
}

func TestFastRetransmit_AckWithDataIsNotDuplicate(t *testing.T) {
	h := established(t)
	h.sent(5 * 1448)
	for i := range 3 {
		h.in(h.data(pattern(i, 10)))
	}
	if h.stats.DupAcks.Load() != 0 {
		t.Fatal("segments with data counted as duplicate ACKs")
	}
}

func TestFastRetransmit_WindowChangeIsNotDuplicate(t *testing.T) {
	h := established(t)
	h.sent(5 * 1448)
	for i := range 3 {
		a := h.dupAck()
		a.Wnd = uint16(1000 + i)
		h.in(a)
	}
	if h.tcb.inRecovery {
		t.Fatal("window updates started fast retransmit")
	}
}

func TestFastRecovery_PartialAckRetransmitsNextHole(t *testing.T) {
	h := established(t)
	h.sent(5 * 1448)
	for range 3 {
		h.in(h.dupAck())
	}
	h.take()
	h.in(h.ackOf(testISS.Add(1 + 1448)))
	segs := h.take()
	if len(segs) == 0 || segs[0].Seq != testISS.Add(1+1448) {
		t.Fatalf("after partial ACK sent %v, want the next hole", segsString(segs))
	}
	if !h.tcb.inRecovery {
		t.Fatal("partial ACK ended recovery")
	}
}

func TestFastRecovery_FullAckEndsRecovery(t *testing.T) {
	h := established(t)
	h.sent(5 * 1448)
	for range 3 {
		h.in(h.dupAck())
	}
	h.in(h.ack())
	if h.tcb.inRecovery {
		t.Fatal("still in recovery after the recovery point was acknowledged")
	}
}

func TestFastRecovery_NoSecondRecoveryBelowRecoverPoint(t *testing.T) {
	h := established(t)
	h.sent(5 * 1448)
	h.advance(200 * time.Millisecond) // RTO sets recover = SND.NXT
	h.take()
	for range 3 {
		h.in(h.dupAck())
	}
	if h.stats.FastRetransmits.Load() != 0 {
		t.Fatal("fast retransmit for data sent before the timeout (RFC 6582 §4)")
	}
}

// zeroWindow makes the peer announce a zero window.
func (h *harness) zeroWindow() {
	a := h.ackOf(h.tcb.sndUna)
	a.Wnd = 0
	h.in(a)
}

func TestPersist_ProbesZeroWindowWithBackoff(t *testing.T) {
	h := established(t)
	h.zeroWindow()
	h.sent(1000)
	if got := h.tcb.Deadline().Sub(h.now); got != 200*time.Millisecond {
		t.Fatalf("persist timer %v, want RTO", got)
	}
	for _, d := range []time.Duration{200, 400, 800} {
		h.advance(d*time.Millisecond - time.Millisecond)
		h.none()
		h.advance(time.Millisecond)
		p := h.one()
		if len(p.Payload) != 1 || p.Seq != testISS.Add(1) {
			t.Fatalf("probe %v, want 1 octet at SND.NXT", p.String())
		}
		h.zeroWindow()
	}
	if h.stats.PersistProbes.Load() != 3 {
		t.Fatalf("PersistProbes %d", h.stats.PersistProbes.Load())
	}
}

func TestPersist_NeverGivesUp(t *testing.T) {
	h := established(t, func(c *Config) { c.MaxRTO = 2 * time.Second; c.MaxRetransmits = 3 })
	h.zeroWindow()
	h.sent(1000)
	for range 30 {
		h.advance(h.tcb.Deadline().Sub(h.now))
		h.zeroWindow()
	}
	h.wantState(Established)
}

func TestPersist_WindowOpeningSendsDataAndStopsProbing(t *testing.T) {
	h := established(t)
	h.zeroWindow()
	h.sent(1000)
	h.advance(200 * time.Millisecond)
	h.one()
	h.in(h.ackOf(h.tcb.sndUna)) // window reopens
	d := h.one()
	if len(d.Payload) != 1000 {
		t.Fatalf("sent %v after window opened", d.String())
	}
	if h.tcb.persistAt != 0 {
		t.Fatal("persist timer still armed")
	}
}

func TestPersist_AcceptedProbeOctetAdvancesSndUna(t *testing.T) {
	h := established(t)
	h.zeroWindow()
	h.sent(1000)
	h.advance(200 * time.Millisecond)
	h.one()
	a := h.ackOf(testISS.Add(2)) // the probe octet taken, window zero again
	a.Wnd = 0
	h.in(a)
	if h.tcb.sndUna != testISS.Add(2) || h.tcb.sndNxt != testISS.Add(2) {
		t.Fatalf("SND.UNA %d SND.NXT %d after the probe was acked", h.tcb.sndUna, h.tcb.sndNxt)
	}
	h.advance(h.tcb.Deadline().Sub(h.now))
	if p := h.one(); p.Seq != testISS.Add(2) {
		t.Fatalf("next probe at %d", p.Seq)
	}
}

func TestKeepalive_OffByDefault(t *testing.T) {
	h := established(t)
	if h.tcb.Deadline() != 0 {
		t.Fatal("a timer runs on an idle connection without keepalive")
	}
}

func keepalive(c *Config) {
	c.KeepaliveIdle, c.KeepaliveInterval, c.KeepaliveCount = 10*time.Second, time.Second, 3
}

func TestKeepalive_ProbesAfterIdleAndGivesUp(t *testing.T) {
	h := established(t, keepalive)
	h.advance(10*time.Second - time.Millisecond)
	h.none()
	h.advance(time.Millisecond)
	p := h.one()
	if p.Seq != h.tcb.sndMax.Add(^uint32(0)) || len(p.Payload) != 0 || p.Ack != h.peerNxt {
		t.Fatalf("keepalive %v, want SEQ=SND.NXT-1", p.String())
	}
	h.advance(time.Second)
	h.one()
	h.advance(time.Second)
	h.one()
	h.advance(time.Second)
	h.none()
	h.wantState(Closed)
	if !errors.Is(h.tcb.Err(), syscall.ETIMEDOUT) || h.stats.KeepalivesSent.Load() != 3 {
		t.Fatalf("Err %v, KeepalivesSent %d", h.tcb.Err(), h.stats.KeepalivesSent.Load())
	}
}

func TestKeepalive_AnswerRestartsIdle(t *testing.T) {
	h := established(t, keepalive)
	h.advance(10 * time.Second)
	h.one()
	h.in(h.ack())
	h.advance(9 * time.Second)
	h.none()
	h.advance(time.Second)
	h.one()
	h.wantState(Established)
}

func TestDelayedAck_PiggybacksOnData(t *testing.T) {
	h := established(t)
	h.in(h.data([]byte("req")))
	h.none()
	h.tcb.Write([]byte("resp"))
	h.output()
	d := h.one()
	if d.Ack != h.peerNxt || string(d.Payload) != "resp" {
		t.Fatalf("sent %v", d.String())
	}
	h.advance(100 * time.Millisecond) // past the delayed-ACK timeout
	h.none()
}

func TestDeadline_IsEarliestTimer(t *testing.T) {
	h := established(t, keepalive)
	h.in(h.data([]byte("x"))) // delayed ACK at +40ms, keepalive at +10s
	if got := h.tcb.Deadline(); got != h.now.Add(40*time.Millisecond) {
		t.Fatalf("deadline %v, want the delayed ACK", got.Sub(h.now))
	}
}
