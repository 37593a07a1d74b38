package tcp

import (
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// ccNewReno is Reno congestion control (RFC 5681) with the NewReno
// modification to fast recovery (RFC 6582); the recovery bookkeeping
// itself (recover, partial vs. full ACK) lives in the TCB.
type ccNewReno struct {
	ccWindow
}

func newCCNewReno(mss uint32) *ccNewReno {
	r := &ccNewReno{}
	r.init(mss)
	return r
}

func (r *ccNewReno) name() string { return ccNameNewReno }

// onAck is RFC 5681 §3.1: slow start while cwnd < ssthresh, then
// congestion avoidance, with any bytes left over after crossing ssthresh
// counted toward congestion avoidance.
func (r *ccNewReno) onAck(acked uint32, _ time.Duration, _ clock.Time) {
	r.rtoStreak = false
	if r.inSlowStart() {
		acked = r.slowStart(acked)
	}
	if acked > 0 {
		r.renoAvoidance(acked)
	}
}

// onEnterRecovery is RFC 5681 §3.2 step 2 (eq. 4): ssthresh =
// max(FlightSize/2, 2*SMSS), and cwnd = ssthresh as RFC 6675 §5 step (4.2)
// has it. The "+3*SMSS" inflation of RFC 5681 §3.2 step 3 comes from the
// TCB calling onDupAck for the three duplicates when it recovers without
// SACK.
func (r *ccNewReno) onEnterRecovery(_ clock.Time, flight uint32) {
	r.reduce(flight, 1, 2)
	r.setCwnd(uint64(r.ssthB))
}

func (r *ccNewReno) onExitRecovery(clock.Time) { r.exitRecovery() }

// onRTO is RFC 5681 §3.1 eq. (4) then cwnd = LW; a repeated timeout for
// the same segment keeps ssthresh.
func (r *ccNewReno) onRTO(_ clock.Time, flight uint32) {
	if !r.rtoStreak {
		r.reduce(flight, 1, 2)
	}
	r.rto()
}

func (r *ccNewReno) onSendAfterIdle(_ clock.Time, idle, rto time.Duration) {
	r.restartAfterIdle(idle, rto)
}
