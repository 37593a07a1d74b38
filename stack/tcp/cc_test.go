package tcp

import (
	"math"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

const ccMSS = 1000 // round numbers: cwnd in segments = cwnd/1000

var ccT0 = clock.Time(100 * time.Second)

func newTestCC(t *testing.T, name string) congestionControl {
	t.Helper()
	cc, err := newCongestionControl(name, ccMSS, ccT0)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// ccAlgorithms runs f for both algorithms.
func ccAlgorithms(t *testing.T, f func(t *testing.T, name string)) {
	for _, name := range []string{ccNameNewReno, ccNameCubic} {
		t.Run(name, func(t *testing.T) { f(t, name) })
	}
}

// ackRound acknowledges one cwnd of data in MSS-sized ACKs spread evenly
// over one rtt starting at now, and returns the time after it.
func ackRound(cc congestionControl, now clock.Time, rtt time.Duration) clock.Time {
	n := int(cc.cwnd() / ccMSS)
	for i := range n {
		cc.onAck(ccMSS, rtt, now.Add(rtt*time.Duration(i)/time.Duration(n)))
	}
	return now.Add(rtt)
}

func TestNewCongestionControl_NamesAndErrors(t *testing.T) {
	tests := []struct {
		name, want string
		ok         bool
	}{
		{"cubic", ccNameCubic, true},
		{"CUBIC", ccNameCubic, true},
		{"", ccNameCubic, true},
		{"newreno", ccNameNewReno, true},
		{"NewReno", ccNameNewReno, true},
		{"reno", "", false},
		{"bbr", "", false},
	}
	for _, tt := range tests {
		cc, err := newCongestionControl(tt.name, ccMSS, ccT0)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err = %v, want ok %v", tt.name, err, tt.ok)
			continue
		}
		if tt.ok && cc.name() != tt.want {
			t.Errorf("%q: got %q, want %q", tt.name, cc.name(), tt.want)
		}
	}
	if _, err := newCongestionControl("cubic", 0, ccT0); err == nil {
		t.Error("zero MSS accepted")
	}
}

func TestCC_InitialWindowIsRFC6928(t *testing.T) {
	tests := []struct{ mss, want uint32 }{
		{536, 5360},   // 10 segments
		{1460, 14600}, // 10 segments
		{1500, 14600}, // capped by 14600 bytes
		{8960, 17920}, // at least 2 segments
		{65475, 130950},
	}
	for _, tt := range tests {
		for _, name := range []string{ccNameNewReno, ccNameCubic} {
			cc, _ := newCongestionControl(name, tt.mss, ccT0)
			if cc.cwnd() != tt.want {
				t.Errorf("%s MSS %d: IW %d, want %d", name, tt.mss, cc.cwnd(), tt.want)
			}
			if cc.ssthresh() != ccMaxWindow {
				t.Errorf("%s: initial ssthresh %d, want arbitrarily high", name, cc.ssthresh())
			}
		}
	}
}

func TestCC_SlowStartGrowsByAckedBytesUpToTwoSegments(t *testing.T) {
	ccAlgorithms(t, func(t *testing.T, name string) {
		cc := newTestCC(t, name)
		steps := []struct{ acked, grow uint32 }{
			{ccMSS, ccMSS},         // one segment per ACK
			{2 * ccMSS, 2 * ccMSS}, // delayed ACK of two segments
			{5 * ccMSS, 2 * ccMSS}, // ABC limit L = 2*SMSS (RFC 3465)
			{100, 100},             // ACK division earns only what is acked
		}
		for _, s := range steps {
			before := cc.cwnd()
			cc.onAck(s.acked, 0, ccT0)
			if got := cc.cwnd() - before; got != s.grow {
				t.Errorf("ACK of %d bytes grew cwnd by %d, want %d", s.acked, got, s.grow)
			}
		}
	})
}

func TestCC_SlowStartDoublesPerRTT(t *testing.T) {
	ccAlgorithms(t, func(t *testing.T, name string) {
		cc := newTestCC(t, name)
		now := ccT0
		for round := range 5 {
			before := cc.cwnd()
			now = ackRound(cc, now, 100*time.Millisecond)
			if cc.cwnd() != 2*before {
				t.Fatalf("round %d: cwnd %d -> %d, want doubled", round, before, cc.cwnd())
			}
		}
	})
}

func TestCC_SlowStartStopsAtSsthresh(t *testing.T) {
	ccAlgorithms(t, func(t *testing.T, name string) {
		cc := newTestCC(t, name)
		cc.onRTO(ccT0, 30*ccMSS) // ssthresh = 15 (newreno) or 21 (cubic) segments, cwnd 1
		ss := cc.ssthresh()
		now := ccT0
		for range 20 {
			cc.onAck(ccMSS, 0, now)
			now = now.Add(time.Millisecond)
		}
		if c := cc.cwnd(); c < ss || c > ss+2*ccMSS {
			t.Errorf("after slow start to ssthresh %d, cwnd %d: should stop near ssthresh", ss, c)
		}
	})
}

func TestNewReno_CongestionAvoidanceAddsOneSegmentPerRTT(t *testing.T) {
	for _, ackSize := range []uint32{ccMSS, 2 * ccMSS, ccMSS / 2} {
		cc := newCCNewReno(ccMSS)
		cc.onEnterRecovery(ccT0, 40*ccMSS)
		cc.onExitRecovery(ccT0)
		if cc.cwnd() != 20*ccMSS || cc.ssthresh() != 20*ccMSS {
			t.Fatalf("setup: cwnd %d ssthresh %d", cc.cwnd(), cc.ssthresh())
		}
		for round := range 10 {
			before := cc.cwnd()
			for acked := uint32(0); acked < before; acked += ackSize {
				cc.onAck(ackSize, 0, ccT0)
			}
			if cc.cwnd() != before+ccMSS {
				t.Fatalf("ACKs of %d, round %d: cwnd %d -> %d, want +1 MSS", ackSize, round, before, cc.cwnd())
			}
		}
	}
}

func TestNewReno_OneHugeAckEarnsAtMostOneSegment(t *testing.T) {
	cc := newCCNewReno(ccMSS)
	cc.onEnterRecovery(ccT0, 40*ccMSS)
	cc.onExitRecovery(ccT0)
	cc.onAck(100*ccMSS, 0, ccT0)
	if cc.cwnd() != 21*ccMSS {
		t.Errorf("cwnd %d after an ACK of 5 windows, want 21 segments", cc.cwnd())
	}
}

func TestNewReno_EnterRecoveryHalvesFlightSize(t *testing.T) {
	tests := []struct{ flight, want uint32 }{
		{40 * ccMSS, 20 * ccMSS},
		{5 * ccMSS, 2500},
		{3 * ccMSS, 2 * ccMSS}, // floor 2*SMSS
		{0, 2 * ccMSS},
	}
	for _, tt := range tests {
		cc := newCCNewReno(ccMSS)
		cc.onEnterRecovery(ccT0, tt.flight)
		if cc.ssthresh() != tt.want || cc.cwnd() != tt.want {
			t.Errorf("flight %d: ssthresh %d cwnd %d, want both %d", tt.flight, cc.ssthresh(), cc.cwnd(), tt.want)
		}
	}
}

func TestCC_NonSACKRecoveryInflatesAndDeflates(t *testing.T) {
	ccAlgorithms(t, func(t *testing.T, name string) {
		cc := newTestCC(t, name)
		cc.onEnterRecovery(ccT0, 40*ccMSS)
		ss := cc.ssthresh()
		for range 3 { // RFC 5681 §3.2 step 2: ssthresh + 3*SMSS
			cc.onDupAck()
		}
		if cc.cwnd() != ss+3*ccMSS {
			t.Fatalf("after 3 dup ACKs cwnd %d, want ssthresh+3 MSS = %d", cc.cwnd(), ss+3*ccMSS)
		}
		cc.onDupAck() // step 4: +SMSS per further dup ACK
		if cc.cwnd() != ss+4*ccMSS {
			t.Fatalf("after 4 dup ACKs cwnd %d, want %d", cc.cwnd(), ss+4*ccMSS)
		}
		// RFC 6582 partial ACK of 5 segments: -5 MSS, +1 MSS.
		cc.onRecoveryAck(5 * ccMSS)
		if cc.cwnd() != ss {
			t.Fatalf("after partial ACK of 5 MSS cwnd %d, want %d", cc.cwnd(), ss)
		}
		// Partial ACK below one SMSS: no add-back.
		cc.onRecoveryAck(300)
		if cc.cwnd() != ss-300 {
			t.Fatalf("after partial ACK of 300 bytes cwnd %d, want %d", cc.cwnd(), ss-300)
		}
		cc.onRecoveryAck(1 << 20) // deflating past zero stops at 1 SMSS
		if cc.cwnd() < ccMSS {
			t.Fatalf("cwnd %d below one SMSS", cc.cwnd())
		}
		cc.onExitRecovery(ccT0)
		if cc.cwnd() != ss {
			t.Errorf("full ACK: cwnd %d, want ssthresh %d", cc.cwnd(), ss)
		}
	})
}

func TestNewReno_RTOCollapsesToOneSegment(t *testing.T) {
	cc := newCCNewReno(ccMSS)
	cc.onRTO(ccT0, 40*ccMSS)
	if cc.cwnd() != ccMSS || cc.ssthresh() != 20*ccMSS {
		t.Fatalf("RTO: cwnd %d ssthresh %d, want 1 MSS and 20 MSS", cc.cwnd(), cc.ssthresh())
	}
	// RFC 5681 §3.1: a timeout for an already timer-retransmitted segment
	// holds ssthresh.
	cc.onRTO(ccT0, 2*ccMSS)
	if cc.ssthresh() != 20*ccMSS {
		t.Fatalf("second RTO: ssthresh %d, want held at 20 MSS", cc.ssthresh())
	}
	// RFC 3465 §2.3: slow start after an RTO counts at most SMSS per ACK.
	cc.onAck(2*ccMSS, 0, ccT0)
	if cc.cwnd() != 2*ccMSS {
		t.Fatalf("ACK of 2 MSS after RTO: cwnd %d, want 2 MSS", cc.cwnd())
	}
	cc.onRTO(ccT0, 10*ccMSS) // new data was acked: a fresh timeout reduces
	if cc.ssthresh() != 5*ccMSS || cc.cwnd() != ccMSS {
		t.Errorf("RTO after progress: ssthresh %d cwnd %d, want 5 and 1 MSS", cc.ssthresh(), cc.cwnd())
	}
}

func TestCC_RestartAfterIdleLimitsToInitialWindow(t *testing.T) {
	ccAlgorithms(t, func(t *testing.T, name string) {
		cc := newTestCC(t, name)
		now := ackRound(cc, ccT0, 50*time.Millisecond)
		now = ackRound(cc, now, 50*time.Millisecond) // cwnd 40 segments
		cc.onSendAfterIdle(now, 100*time.Millisecond, 200*time.Millisecond)
		if cc.cwnd() != 40*ccMSS {
			t.Fatalf("idle shorter than RTO changed cwnd to %d", cc.cwnd())
		}
		cc.onSendAfterIdle(now, time.Second, 200*time.Millisecond)
		if cc.cwnd() != 10*ccMSS {
			t.Errorf("idle longer than RTO: cwnd %d, want RW = IW = 10 MSS", cc.cwnd())
		}
	})
}

// cubicAt builds a CUBIC controller that just had a loss at wmax segments
// with the whole window in flight.
func cubicAt(wmax uint32) *ccCubic {
	c := newCCCubic(ccMSS, ccT0)
	c.cwndB = wmax * ccMSS
	c.onEnterRecovery(ccT0, wmax*ccMSS)
	c.onExitRecovery(ccT0)
	return c
}

func TestCubic_MultiplicativeDecreaseIsBeta(t *testing.T) {
	c := cubicAt(100)
	if c.cwnd() != 70*ccMSS || c.ssthresh() != 70*ccMSS {
		t.Errorf("loss at 100 segments: cwnd %d ssthresh %d, want 70 segments", c.cwnd(), c.ssthresh())
	}
	if c.wMax != 100 || c.cwndPrior != 100 {
		t.Errorf("W_max %v cwnd_prior %v, want 100", c.wMax, c.cwndPrior)
	}
	// FlightSize, not cwnd, sets ssthresh (RFC 9438 §4.6), floor 2 SMSS.
	c2 := newCCCubic(ccMSS, ccT0)
	c2.cwndB = 100 * ccMSS
	c2.onEnterRecovery(ccT0, 10*ccMSS)
	if c2.ssthresh() != 7*ccMSS {
		t.Errorf("flight 10 segments: ssthresh %d, want 7 segments", c2.ssthresh())
	}
	c2.onEnterRecovery(ccT0, ccMSS)
	if c2.ssthresh() != 2*ccMSS || c2.cwnd() != 2*ccMSS {
		t.Errorf("flight 1 segment: ssthresh %d cwnd %d, want 2 segments", c2.ssthresh(), c2.cwnd())
	}
}

func TestCubic_KFromFormula(t *testing.T) {
	tests := []struct{ wmax, epoch, want float64 }{
		{100, 70, math.Cbrt(75)}, // 4.2172 s
		{10, 7, math.Cbrt(7.5)},
		{1000, 700, math.Cbrt(750)},
		{50, 50, 0},
	}
	for _, tt := range tests {
		if got := cubicK(tt.wmax, tt.epoch); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("K(%v, %v) = %v, want %v", tt.wmax, tt.epoch, got, tt.want)
		}
	}
	c := cubicAt(100)
	c.onAck(ccMSS, 100*time.Millisecond, ccT0) // starts the epoch
	if math.Abs(c.k-4.2172) > 1e-3 {
		t.Errorf("epoch after loss at 100: K = %v, want 4.2172", c.k)
	}
}

func TestCubic_WindowFunctionMatchesFormula(t *testing.T) {
	c := cubicAt(100)
	c.onAck(ccMSS, 0, ccT0)
	for _, tt := range []float64{0, 1, 2, 4.2172, 5, 8} {
		want := 0.4*math.Pow(tt-c.k, 3) + 100
		if got := c.wCubic(tt); math.Abs(got-want) > 1e-9 {
			t.Errorf("W_cubic(%v) = %v, want %v", tt, got, want)
		}
	}
	if math.Abs(c.wCubic(0)-70) > 1e-9 || math.Abs(c.wCubic(c.k)-100) > 1e-9 {
		t.Errorf("W_cubic(0) = %v (want cwnd_epoch 70), W_cubic(K) = %v (want W_max 100)", c.wCubic(0), c.wCubic(c.k))
	}
}

func TestCubic_CwndFollowsCubicCurve(t *testing.T) {
	// RTT 100 ms: the cubic term dominates the Reno estimate, so cwnd at
	// time t tracks W_cubic(t) in the concave region, plateaus at W_max
	// around K and then rises in the convex region, until W_est (growing
	// one segment per RTT once past cwnd_prior) overtakes it near t = 6 s
	// and the Reno-friendly region takes over.
	const rtt = 100 * time.Millisecond
	c := cubicAt(100)
	now := ccT0
	for i := 1; i <= 70; i++ {
		now = ackRound(c, now, rtt)
		t1 := now.Sub(ccT0).Seconds()
		want := max(c.wCubic(t1), c.wEst)
		if t1 < 5.5 {
			want = c.wCubic(t1) // the cubic region, by the test's choice of RTT
		}
		got := float64(c.cwnd()) / ccMSS
		if i%10 == 0 || i == 42 {
			t.Logf("t=%.1fs cwnd %.2f W_cubic %.2f W_est %.2f", t1, got, c.wCubic(t1), c.wEst)
		}
		if math.Abs(got-want) > 0.03*want {
			t.Fatalf("t=%.1fs: cwnd %.2f segments, want %.2f (W_cubic %.2f, W_est %.2f)", t1, got, want, c.wCubic(t1), c.wEst)
		}
	}
}

func TestCubic_TargetBoundedToOneAndAHalfCwnd(t *testing.T) {
	c := cubicAt(100)
	c.onAck(ccMSS, 0, ccT0)
	before := float64(c.cwnd()) / ccMSS
	// Far past K the curve is enormous; one RTT may add at most 50%.
	later := ccT0.Add(60 * time.Second)
	n := int(before)
	for i := range n {
		c.onAck(ccMSS, 100*time.Millisecond, later.Add(time.Duration(i)*time.Millisecond))
	}
	after := float64(c.cwnd()) / ccMSS
	if after > 1.5*before*1.02 {
		t.Errorf("one window of ACKs grew cwnd %.1f -> %.1f, more than 1.5x", before, after)
	}
	if after < 1.3*before {
		t.Errorf("one window of ACKs far in the convex region grew cwnd only %.1f -> %.1f", before, after)
	}
}

func TestCubic_RenoFriendlyRegionAtShortRTT(t *testing.T) {
	// RTT 1 ms, W_max 20: W_cubic barely moves in milliseconds, so W_est
	// (alpha = 3*0.3/1.7 = 0.529 segments per RTT until it reaches
	// cwnd_prior, then 1) decides.
	const rtt = time.Millisecond
	c := cubicAt(20)
	now := ccT0
	for range 10 {
		now = ackRound(c, now, rtt)
	}
	got := float64(c.cwnd()) / ccMSS
	if want := 14 + 10*cubicAlphaAIMD; math.Abs(got-want) > 0.5 {
		t.Errorf("after 10 RTTs: cwnd %.2f segments, want about %.2f (Reno-friendly)", got, want)
	}
	if w := c.wCubic(now.Sub(ccT0).Seconds()); got <= w+1 {
		t.Errorf("cwnd %.2f not above W_cubic %.2f: not in the Reno-friendly region", got, w)
	}
	if c.alpha != cubicAlphaAIMD {
		t.Errorf("alpha %v before W_est reaches cwnd_prior", c.alpha)
	}
	for range 10 {
		now = ackRound(c, now, rtt)
	}
	if c.alpha != 1 {
		t.Errorf("alpha %v after W_est passed cwnd_prior 20, want 1", c.alpha)
	}
	before := float64(c.cwnd()) / ccMSS
	for range 5 {
		now = ackRound(c, now, rtt)
	}
	if grow := float64(c.cwnd())/ccMSS - before; math.Abs(grow-5) > 0.6 {
		t.Errorf("with alpha 1, 5 RTTs grew cwnd by %.2f segments, want about 5", grow)
	}
}

func TestCubic_FastConvergenceLowersWMax(t *testing.T) {
	for _, fc := range []bool{true, false} {
		c := cubicAt(100) // W_max 100, cwnd 70
		c.fastConvergence = fc
		c.cwndB = 80 * ccMSS // loss again below the old W_max
		c.onEnterRecovery(ccT0, 80*ccMSS)
		want := 80.0
		if fc {
			want = 80 * (1 + 0.7) / 2 // 68
		}
		if math.Abs(c.wMax-want) > 1e-9 {
			t.Errorf("fast convergence %v: W_max %v, want %v", fc, c.wMax, want)
		}
		if c.cwnd() != 56*ccMSS {
			t.Errorf("fast convergence %v: cwnd %d, want 56 segments", fc, c.cwnd())
		}
	}
	c := cubicAt(100)
	c.cwndB = 120 * ccMSS // loss above W_max: plain update
	c.onEnterRecovery(ccT0, 120*ccMSS)
	if c.wMax != 120 {
		t.Errorf("loss above W_max: W_max %v, want 120", c.wMax)
	}
}

func TestCubic_RTOThenEpochWithZeroK(t *testing.T) {
	c := cubicAt(100)
	c.cwndB = 90 * ccMSS
	c.onRTO(ccT0, 90*ccMSS)
	if c.cwnd() != ccMSS || c.ssthresh() != 63*ccMSS {
		t.Fatalf("RTO: cwnd %d ssthresh %d, want 1 and 63 segments", c.cwnd(), c.ssthresh())
	}
	now := ccT0
	for c.cwnd() < c.ssthresh() {
		c.onAck(ccMSS, 10*time.Millisecond, now)
		now = now.Add(time.Millisecond)
	}
	c.onAck(ccMSS, 10*time.Millisecond, now) // first ACK in congestion avoidance
	if c.k != 0 || math.Abs(c.wMax-c.cwndEpoch) > 1e-9 {
		t.Errorf("first epoch after RTO: K %v W_max %v cwnd_epoch %v, want K 0 and W_max = cwnd_epoch", c.k, c.wMax, c.cwndEpoch)
	}
	if math.Abs(c.wEst-c.cwndEpoch) > 0.1 {
		t.Errorf("W_est %v, want cwnd_epoch %v", c.wEst, c.cwndEpoch)
	}
}

func TestCubic_IdleTimeExcludedFromEpoch(t *testing.T) {
	c := cubicAt(100)
	c.onAck(ccMSS, 0, ccT0)
	start := c.epochStart
	c.onSendAfterIdle(ccT0.Add(time.Second), 150*time.Millisecond, time.Second)
	if got := c.epochStart.Sub(start); got != 150*time.Millisecond {
		t.Errorf("epoch moved by %v, want the idle 150ms", got)
	}
}

func TestCC_CwndNeverBelowOneSegmentNorOverflows(t *testing.T) {
	ccAlgorithms(t, func(t *testing.T, name string) {
		cc := newTestCC(t, name)
		now := ccT0
		for i := range 2000 {
			switch i % 97 {
			case 13:
				cc.onEnterRecovery(now, cc.cwnd())
				cc.onRecoveryAck(cc.cwnd() * 2)
				cc.onExitRecovery(now)
			case 50:
				cc.onRTO(now, 0)
			default:
				cc.onAck(1<<31, time.Millisecond, now)
			}
			now = now.Add(time.Second)
			if c := cc.cwnd(); c < ccMSS || c > ccMaxWindow {
				t.Fatalf("step %d: cwnd %d out of [SMSS, max]", i, c)
			}
		}
	})
}
