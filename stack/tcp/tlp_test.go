package tcp

import (
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// The handshake in the harness takes no time, so SRTT is below the
// timestamp clock's millisecond and the PTO is tlpSlack (2 ms) for a
// flight of more than one segment.

// probedFlight sends three segments, lets their ACKs go missing until the
// PTO and takes the probe, the last segment again.
func probedFlight(t *testing.T) *harness {
	t.Helper()
	h := established(t)
	h.sent(3 * segSize)
	h.advance(tlpSlack)
	if p := h.one(); p.Seq != segAt(2) {
		t.Fatalf("probe %v, want the last segment", p.String())
	}
	return h
}

func TestTLP_RetransmitsTheLastSegmentWhenTheFlightsACKsStop(t *testing.T) {
	h := established(t)
	if n := len(h.sent(3 * segSize)); n != 3 {
		t.Fatalf("%d segments, want 3", n)
	}
	h.advance(tlpSlack - time.Millisecond)
	h.none()
	h.advance(time.Millisecond)
	p := h.one()
	if p.Seq != segAt(2) || len(p.Payload) != segSize {
		t.Fatalf("probe %v, want the last segment again", p.String())
	}
	if h.stats.TLPProbes.Load() != 1 || h.stats.RTOs.Load() != 0 || h.stats.Retransmits.Load() != 1 {
		t.Fatalf("probes %d RTOs %d retransmits %d", h.stats.TLPProbes.Load(), h.stats.RTOs.Load(), h.stats.Retransmits.Load())
	}
	// RFC 8985 §7.3: after the probe the RTO is armed afresh, and no
	// second probe comes while the first is unacknowledged.
	if want := h.now.Add(h.tcb.currentRTO()); h.tcb.rtoAt != want || h.tcb.ptoAt != 0 {
		t.Fatalf("after the probe: rto at %v (want %v), pto at %v", h.tcb.rtoAt, want, h.tcb.ptoAt)
	}
	h.advance(h.tcb.currentRTO() - time.Millisecond)
	h.none()
	h.advance(time.Millisecond)
	if r := h.one(); r.Seq != segAt(0) || h.stats.RTOs.Load() != 1 {
		t.Fatalf("after the probe went unanswered: %v, %d RTOs", r.String(), h.stats.RTOs.Load())
	}
}

func TestTLP_ProbesWithNewDataWhenThePeersWindowTakesIt(t *testing.T) {
	h := established(t)
	cwnd := int(h.tcb.cc.cwnd())
	sent := h.sent(cwnd + 5*segSize) // more than cwnd allows
	if got := len(sent); got != cwnd/segSize {
		t.Fatalf("sent %d segments, want cwnd's %d", got, cwnd/segSize)
	}
	max := h.tcb.sndMax
	h.advance(tlpSlack)
	p := h.one()
	if p.Seq != max || len(p.Payload) != segSize || h.tcb.sndMax != max.Add(segSize) {
		t.Fatalf("probe %v (SND.MAX was %d), want the first unsent segment beyond cwnd", p.String(), max)
	}
	if h.stats.Retransmits.Load() != 0 || h.tcb.tlpRetrans {
		t.Fatal("a probe of new data counted as a retransmission")
	}
	// Its ACK ends the episode with no window reduction.
	before := h.tcb.cc.cwnd()
	h.in(h.ackOf(h.tcb.sndMax))
	h.take()
	if h.tcb.tlpActive || h.tcb.cc.cwnd() < before || h.stats.TLPRecoveries.Load() != 0 {
		t.Fatalf("after the ACK: episode open %v, cwnd %d (was %d), recoveries %d",
			h.tcb.tlpActive, h.tcb.cc.cwnd(), before, h.stats.TLPRecoveries.Load())
	}
}

func TestTLP_SingleSegmentWaitsForTheDelayedACKAndTheRTOComesFirst(t *testing.T) {
	h := established(t)
	h.sent(100)
	// 2·SRTT + 2 ms + 200 ms (TLP.max_ack_delay) is not before the
	// 200 ms RTO: only the RTO is armed (RFC 8985 §7.2).
	if h.tcb.ptoAt != 0 {
		t.Fatalf("PTO armed at %v with one segment in flight", h.tcb.ptoAt.Sub(h.now))
	}
	h.advance(200 * time.Millisecond)
	h.one()
	if h.stats.TLPProbes.Load() != 0 || h.stats.RTOs.Load() != 1 {
		t.Fatalf("probes %d RTOs %d", h.stats.TLPProbes.Load(), h.stats.RTOs.Load())
	}
}

func TestTLP_OffWithoutSACKOrWhenDisabled(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no SACK":  func(c *Config) { c.SACK = false },
		"disabled": func(c *Config) { c.TailLossProbe = false },
	} {
		h := established(t, mod)
		h.sent(3 * segSize)
		if h.tcb.ptoAt != 0 {
			t.Errorf("%s: PTO armed", name)
		}
		h.advance(199 * time.Millisecond)
		if o := h.take(); len(o) != 0 {
			t.Errorf("%s: sent %v before the RTO", name, segsString(o))
		}
	}
}

func TestTLP_NotArmedWhileSACKedDataIsOutstanding(t *testing.T) {
	h := established(t)
	h.sent(4 * segSize)
	h.in(h.sackOf(segAt(0), [2]int{1, 2})) // segment 0 missing, 1 SACKed
	h.take()
	if h.tcb.ptoAt != 0 {
		t.Fatal("PTO armed with SACKed data outstanding (RFC 8985 §7.2)")
	}
}

func TestTLP_ACKBeyondTheProbeWithoutDSACKReducesTheWindow(t *testing.T) {
	h := probedFlight(t)
	cwnd := h.tcb.cc.cwnd()
	// The ACK of the probe covers TLP.end_seq exactly: the episode stays
	// open, a D-SACK may follow.
	end := h.tcb.sndMax
	h.in(h.ackOf(end))
	if !h.tcb.tlpActive {
		t.Fatal("episode closed by an ACK of exactly TLP.end_seq without D-SACK")
	}
	// New data, and its ACK beyond TLP.end_seq: the probe repaired a loss.
	h.tcb.Write(pattern(0, segSize))
	h.output()
	h.take()
	h.in(h.ackOf(h.tcb.sndMax))
	if h.tcb.tlpActive || h.stats.TLPRecoveries.Load() != 1 || h.tcb.cc.cwnd() >= cwnd {
		t.Fatalf("episode open %v, recoveries %d, cwnd %d (was %d): want a fast-recovery reduction",
			h.tcb.tlpActive, h.stats.TLPRecoveries.Load(), h.tcb.cc.cwnd(), cwnd)
	}
}

func TestTLP_DSACKOfTheProbeMeansNothingWasLost(t *testing.T) {
	h := probedFlight(t)
	cwnd := h.tcb.cc.cwnd()
	// Only the ACK was lost: the probe arrives as a duplicate and the
	// peer reports it with a D-SACK block below the cumulative ACK (RFC
	// 2883).
	h.in(h.sackOf(segAt(3), [2]int{2, 3}))
	if h.tcb.tlpActive || h.stats.TLPRecoveries.Load() != 0 || h.tcb.cc.cwnd() < cwnd {
		t.Fatalf("episode open %v, recoveries %d, cwnd %d (was %d): a spurious probe must not reduce the window",
			h.tcb.tlpActive, h.stats.TLPRecoveries.Load(), h.tcb.cc.cwnd(), cwnd)
	}
}

func TestTLP_RTOEndsTheEpisode(t *testing.T) {
	h := probedFlight(t)
	h.advance(h.tcb.currentRTO())
	h.take()
	if h.tcb.tlpActive || h.tcb.ptoAt != 0 || h.stats.RTOs.Load() != 1 {
		t.Fatalf("after the RTO: episode open %v, PTO %v, RTOs %d", h.tcb.tlpActive, h.tcb.ptoAt, h.stats.RTOs.Load())
	}
}

func TestTLP_ProbeCarriesTheFINWhenThatIsTheLastSegment(t *testing.T) {
	h := established(t)
	h.sent(2 * segSize)
	h.tcb.Close()
	h.output()
	if f := h.one(); !f.Has(packet.FIN) {
		t.Fatalf("want the FIN, got %v", f.String())
	}
	h.advance(tlpSlack)
	p := h.one()
	if !p.Has(packet.FIN) || p.Seq != segAt(1) || len(p.Payload) != segSize {
		t.Fatalf("probe %v, want the last data segment with the FIN", p.String())
	}
}
