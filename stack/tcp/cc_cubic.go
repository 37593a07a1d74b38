package tcp

import (
	"math"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// CUBIC constants (RFC 9438 §4.1.1, §4.6, §5.1).
const (
	cubicC    = 0.4 // segments/second^3
	cubicBeta = 0.7 // multiplicative decrease factor
	// cubicAlphaAIMD is alpha_cubic = 3*(1-beta)/(1+beta) (RFC 9438 §4.3),
	// the Reno-friendly additive increase that matches AIMD(1, 0.5).
	cubicAlphaAIMD = 3 * (1 - cubicBeta) / (1 + cubicBeta)
)

// ccCubic is CUBIC (RFC 9438, draft-ietf-tcpm-rfc8312bis-15). Slow start is
// RFC 5681's with byte counting (RFC 9438 §4.10 allows it); HyStart++ is
// not implemented. Windows in the RFC's formulas are in segments, kept as
// float64; cwnd itself is bytes in the embedded ccWindow.
type ccCubic struct {
	ccWindow

	// fastConvergence enables RFC 9438 §4.7. On by default: a gateway
	// carries many flows that share bottlenecks, the case it is made for.
	fastConvergence bool

	wMax      float64 // W_max, segments
	cwndPrior float64 // cwnd_prior, segments
	k         float64 // K, seconds
	alpha     float64 // alpha_cubic for the W_est update
	wEst      float64 // W_est, segments

	epochValid bool       // a congestion avoidance stage is running
	epochStart clock.Time // t_epoch
	cwndEpoch  float64    // cwnd_epoch, segments
	// afterRTO makes the next epoch use K = 0 and W_max = cwnd_epoch
	// (RFC 9438 §4.8).
	afterRTO bool

	// exact is cwnd in bytes with the fraction that the uint32 in
	// ccWindow drops, so small per-ACK increments accumulate.
	exact float64
}

func newCCCubic(mss uint32, _ clock.Time) *ccCubic {
	c := &ccCubic{fastConvergence: true, alpha: 1}
	c.init(mss)
	return c
}

func (c *ccCubic) name() string { return ccNameCubic }

// segs converts bytes to segments.
func (c *ccCubic) segs(b float64) float64 { return b / float64(c.smss) }

// wCubic is W_cubic(t) = C*(t-K)^3 + W_max (RFC 9438 §4.2 figure 1), t in
// seconds since the epoch, result in segments.
func (c *ccCubic) wCubic(t float64) float64 {
	d := t - c.k
	return cubicC*d*d*d + c.wMax
}

// cubicK is K = cbrt((W_max - cwnd_epoch)/C) (RFC 9438 §4.2 figure 2).
func cubicK(wMax, cwndEpoch float64) float64 {
	return math.Cbrt((wMax - cwndEpoch) / cubicC)
}

// onAck is slow start below ssthresh, then the CUBIC window increase of
// RFC 9438 §4.2-§4.5.
func (c *ccCubic) onAck(acked uint32, rtt time.Duration, now clock.Time) {
	c.rtoStreak = false
	if c.inSlowStart() {
		acked = c.slowStart(acked)
		if acked == 0 {
			return
		}
	}
	c.avoid(acked, rtt, now)
}

// avoid is one new ACK in congestion avoidance.
func (c *ccCubic) avoid(acked uint32, rtt time.Duration, now clock.Time) {
	if uint32(c.exact) != c.cwndB {
		c.exact = float64(c.cwndB) // cwnd was set elsewhere since
	}
	if !c.epochValid {
		c.startEpoch(now)
	}
	cw := c.segs(c.exact)
	segAcked := c.segs(float64(acked))

	// RFC 9438 §4.3 figure 4, and alpha_cubic = 1 once W_est reaches
	// cwnd_prior.
	c.wEst += c.alpha * segAcked / cw
	if c.wEst >= c.cwndPrior {
		c.alpha = 1
	}

	t := now.Sub(c.epochStart).Seconds()
	var next float64
	if c.wCubic(t) < c.wEst {
		// RFC 9438 §4.3: in the Reno-friendly region cwnd SHOULD be set
		// to W_est. Never shrink on an ACK, though.
		next = max(cw, c.wEst)
	} else {
		// RFC 9438 §4.4/§4.5: concave and convex regions both add
		// (target - cwnd)/cwnd per segment acknowledged.
		target := c.target(t + rtt.Seconds())
		next = cw + (target-cw)/cw*segAcked
	}
	c.exact = min(next*float64(c.smss), ccMaxWindow)
	c.setCwnd(uint64(c.exact))
}

// target is W_cubic(t+RTT) bounded to [cwnd, 1.5*cwnd] (RFC 9438 §4.2) so
// that growth is non-decreasing and slower than slow start.
func (c *ccCubic) target(t float64) float64 {
	cw := c.segs(c.exact)
	return min(max(c.wCubic(t), cw), 1.5*cw)
}

// startEpoch begins a congestion avoidance stage (RFC 9438 §4.2).
func (c *ccCubic) startEpoch(now clock.Time) {
	c.epochValid = true
	c.epochStart = now
	c.cwndEpoch = c.segs(c.exact)
	// RFC 9438 §4.3: W_est starts at cwnd_epoch.
	c.wEst = c.cwndEpoch
	if c.afterRTO || c.wMax <= c.cwndEpoch {
		// RFC 9438 §4.8 (first stage after a timeout) and §4.10 (no
		// saturation point known, or already past it): K = 0 and
		// W_max = cwnd_epoch, so the curve starts convex right here.
		c.k = 0
		c.wMax = c.cwndEpoch
	} else {
		c.k = cubicK(c.wMax, c.cwndEpoch)
	}
	c.afterRTO = false
}

// congestionEvent is RFC 9438 §4.6 figure 5 with §4.7 fast convergence,
// shared by loss detected by ACKs and by the timer.
func (c *ccCubic) congestionEvent(flight uint32) {
	cw := c.segs(float64(c.cwndB))
	// RFC 9438 §4.7: a flow whose saturation point dropped releases more
	// bandwidth by lowering W_max further.
	if c.fastConvergence && cw < c.wMax {
		c.wMax = cw * (1 + cubicBeta) / 2
	} else {
		c.wMax = cw
	}
	c.cwndPrior = cw
	// ssthresh = max(flight_size * beta_cubic, 2 SMSS). FlightSize, not
	// cwnd, as RFC 9438 §4.6 specifies.
	c.reduce(flight, 7, 10)
	c.alpha = cubicAlphaAIMD
	c.epochValid = false
}

// onEnterRecovery is RFC 9438 §4.6: cwnd = max(ssthresh, 2 SMSS) on loss.
func (c *ccCubic) onEnterRecovery(_ clock.Time, flight uint32) {
	c.congestionEvent(flight)
	c.setCwnd(uint64(c.ssthB))
}

// onExitRecovery deflates to ssthresh; the next ACK starts a new epoch.
func (c *ccCubic) onExitRecovery(clock.Time) {
	c.exitRecovery()
	c.epochValid = false
}

// onRTO is RFC 9438 §4.8: ssthresh as in §4.6, cwnd as Reno (one SMSS),
// and the first congestion avoidance stage afterwards uses K = 0.
func (c *ccCubic) onRTO(_ clock.Time, flight uint32) {
	if !c.rtoStreak {
		c.congestionEvent(flight)
	}
	c.rto()
	c.epochValid = false
	c.afterRTO = true
}

// onSendAfterIdle applies the RFC 5681 §4.1 restart window and, per RFC
// 9438 §5.8, keeps the idle period out of t by moving the epoch start.
func (c *ccCubic) onSendAfterIdle(_ clock.Time, idle, rto time.Duration) {
	if c.epochValid {
		c.epochStart = c.epochStart.Add(idle)
	}
	if c.restartAfterIdle(idle, rto) {
		c.epochValid = false
	}
}
