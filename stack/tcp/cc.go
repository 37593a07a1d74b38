package tcp

import (
	"fmt"
	"strings"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// congestionControl is the sender's congestion window algorithm, pluggable
// within the framework of RFC 5681 (slow start, congestion avoidance, fast
// retransmit/fast recovery, retransmission timeout). The TCB owns loss
// detection and recovery bookkeeping (dup ACK counting, recover, the SACK
// scoreboard and pipe); the algorithm only owns cwnd and ssthresh. All sizes
// are bytes. Implementations are plain state, not safe for concurrent use:
// the TCB calls them under its connection's lock.
//
// Call sequence expected from the TCB:
//   - every ACK that cumulatively acknowledges new data outside recovery:
//     onAck;
//   - loss detected by dup ACKs or the SACK scoreboard (RFC 5681 §3.2 step
//     2, RFC 6582 §3.2 step 2, RFC 6675 §5 step 4): onEnterRecovery, once
//     per recovery episode;
//   - without SACK (RFC 6582), each further duplicate ACK in recovery
//     (including the three that triggered it, to get ssthresh+3*SMSS):
//     onDupAck; each partial ACK: onRecoveryAck. With SACK (RFC 6675) cwnd
//     stays at ssthresh during recovery and pipe governs sending, so
//     neither is called;
//   - the ACK covering the recovery point: onExitRecovery;
//   - a retransmission timeout: onRTO (also ends any recovery);
//   - sending after an idle period longer than the RTO: onSendAfterIdle.
type congestionControl interface {
	// cwnd is the congestion window in bytes, never below one SMSS.
	cwnd() uint32
	// ssthresh is the slow start threshold in bytes.
	ssthresh() uint32
	// onAck grows the window for acked bytes newly cumulatively
	// acknowledged outside recovery. rtt is the current smoothed RTT
	// (zero while there is no sample); now is the ACK's arrival time.
	onAck(acked uint32, rtt time.Duration, now clock.Time)
	// onEnterRecovery reduces ssthresh and cwnd at the start of fast
	// recovery; flight is FlightSize (RFC 5681 §3.1): bytes sent but not
	// cumulatively acknowledged, excluding Limited Transmit segments.
	onEnterRecovery(now clock.Time, flight uint32)
	// onDupAck inflates cwnd by one SMSS for a duplicate ACK during
	// non-SACK fast recovery (RFC 5681 §3.2 steps 3 and 4).
	onDupAck()
	// onRecoveryAck deflates cwnd for a partial ACK of acked bytes during
	// non-SACK fast recovery (RFC 6582 §3.2 step 3, partial ACKs).
	onRecoveryAck(acked uint32)
	// onExitRecovery deflates cwnd when the recovery point is acknowledged.
	// Both implementations use RFC 6582 §3.2 step 3 option (2),
	// cwnd = ssthresh; the TCB must limit the burst this may allow when
	// little data is outstanding (RFC 6582 asks for it).
	onExitRecovery(now clock.Time)
	// onRTO collapses the window after a retransmission timeout; flight is
	// FlightSize before the retransmission.
	onRTO(now clock.Time, flight uint32)
	// onSendAfterIdle is called before sending when nothing was sent for
	// idle, and rto is the current RTO. RFC 5681 §4.1 restart window.
	onSendAfterIdle(now clock.Time, idle, rto time.Duration)
	// name is the algorithm's configuration name, for traces.
	name() string
}

// Names accepted by newCongestionControl.
const (
	ccNameCubic   = "cubic"
	ccNameNewReno = "newreno"
)

// ccMaxWindow caps cwnd well below 2^32 so that arithmetic on it (adding an
// SMSS, multiplying by 1.5) cannot overflow. 1 GiB exceeds the largest
// window TCP can advertise (RFC 7323 §2.3: 2^30 - 1 with scale 14).
const ccMaxWindow = 1 << 30

// newCongestionControl returns the named algorithm ("cubic" or "newreno",
// any case; "" means cubic, the default) for a connection sending segments
// of mss bytes.
func newCongestionControl(name string, mss uint32, now clock.Time) (congestionControl, error) {
	if mss == 0 {
		return nil, fmt.Errorf("tcp: congestion control %q: zero MSS", name)
	}
	switch strings.ToLower(name) {
	case ccNameCubic, "":
		return newCCCubic(mss, now), nil
	case ccNameNewReno:
		return newCCNewReno(mss), nil
	default:
		return nil, fmt.Errorf("tcp: unknown congestion control %q (want %q or %q)", name, ccNameCubic, ccNameNewReno)
	}
}

// ccInitialWindow is IW in bytes. RFC 6928 §2: IW = min(10*MSS, max(2*MSS,
// 14600)), the value Linux and most current stacks use; the more
// conservative RFC 5681 §3.1 table is an upper bound RFC 6928 explicitly
// raises for this experiment, and our peers are mostly one hop away.
func ccInitialWindow(mss uint32) uint32 {
	return min(10*mss, max(2*mss, 14600))
}

// ccWindow is the state shared by both algorithms: cwnd, ssthresh and the
// RFC 5681 slow start / Reno machinery. The algorithms embed it.
type ccWindow struct {
	smss  uint32
	cwndB uint32
	ssthB uint32
	// abcLimit is L of Appropriate Byte Counting (RFC 3465 §2.2): the most
	// one ACK may grow cwnd in slow start. 2*SMSS normally, so that delayed
	// ACKs (one per two segments) do not halve the slow start rate; SMSS
	// in the slow start after an RTO (RFC 3465 §2.3).
	abcLimit uint32
	// caAcked counts bytes acknowledged in congestion avoidance since cwnd
	// last grew (RFC 5681 §3.1, the recommended byte counting).
	caAcked uint32
	// rtoStreak is set by a retransmission timeout and cleared by the next
	// ACK of new data: a timeout that fires again for an already
	// timer-retransmitted segment holds ssthresh (RFC 5681 §3.1).
	rtoStreak bool
}

func (w *ccWindow) init(mss uint32) {
	w.smss = mss
	w.cwndB = ccInitialWindow(mss)
	// RFC 5681 §3.1: the initial ssthresh SHOULD be arbitrarily high.
	w.ssthB = ccMaxWindow
	w.abcLimit = 2 * mss
}

func (w *ccWindow) cwnd() uint32     { return w.cwndB }
func (w *ccWindow) ssthresh() uint32 { return w.ssthB }

// inSlowStart reports cwnd < ssthresh (RFC 5681 §3.1; at equality we use
// congestion avoidance, which the RFC allows).
func (w *ccWindow) inSlowStart() bool { return w.cwndB < w.ssthB }

// slowStart grows cwnd for acked bytes and returns the bytes left over once
// cwnd reaches ssthresh, which belong to congestion avoidance.
func (w *ccWindow) slowStart(acked uint32) (rest uint32) {
	// RFC 5681 §3.1 eq. (2) with RFC 3465's L: cwnd += min(N, L).
	inc := min(acked, w.abcLimit)
	room := w.ssthB - w.cwndB
	if inc >= room {
		w.cwndB = w.ssthB
		w.abcLimit = 2 * w.smss
		return acked - room
	}
	w.setCwnd(uint64(w.cwndB) + uint64(inc))
	return 0
}

// renoAvoidance is RFC 5681 §3.1 congestion avoidance by byte counting:
// when the bytes acknowledged reach cwnd, cwnd grows by one SMSS, so at
// most one SMSS per RTT.
func (w *ccWindow) renoAvoidance(acked uint32) {
	w.caAcked += acked
	if w.caAcked >= w.cwndB {
		w.caAcked -= w.cwndB
		w.setCwnd(uint64(w.cwndB) + uint64(w.smss))
		// A single huge ACK earns one SMSS, not several (RFC 5681 §3.1:
		// MUST NOT increment cwnd by more than SMSS per RTT).
		w.caAcked = min(w.caAcked, w.cwndB-1)
	}
}

func (w *ccWindow) setCwnd(v uint64) {
	w.cwndB = uint32(min(max(v, uint64(w.smss)), ccMaxWindow))
}

// reduce sets ssthresh to max(flight*factor, 2*SMSS) (RFC 5681 §3.1 eq. 4
// with factor 1/2; RFC 9438 §4.6 figure 5 with beta_cubic).
func (w *ccWindow) reduce(flight uint32, num, den uint64) {
	s := uint64(flight) * num / den
	w.ssthB = uint32(min(max(s, 2*uint64(w.smss)), ccMaxWindow))
	w.caAcked = 0
}

// onDupAck is RFC 5681 §3.2 steps 3 and 4: each duplicate ACK means a
// segment left the network, so cwnd is artificially inflated by SMSS.
func (w *ccWindow) onDupAck() { w.setCwnd(uint64(w.cwndB) + uint64(w.smss)) }

// onRecoveryAck is RFC 6582 §3.2 step 3, partial acknowledgments: deflate
// cwnd by the newly acknowledged bytes and, if that was at least one SMSS,
// add one SMSS back for the segment that left the network.
func (w *ccWindow) onRecoveryAck(acked uint32) {
	c := uint64(w.cwndB) - uint64(min(acked, w.cwndB))
	if acked >= w.smss {
		c += uint64(w.smss)
	}
	w.setCwnd(c)
}

// exitRecovery is RFC 6582 §3.2 step 3, full acknowledgments, option (2):
// cwnd = ssthresh.
func (w *ccWindow) exitRecovery() {
	w.setCwnd(uint64(w.ssthB))
	w.caAcked = 0
}

// rto is RFC 5681 §3.1: after ssthresh has been set, cwnd = LW = 1 SMSS,
// and the following slow start counts at most SMSS per ACK (RFC 3465 §2.3).
func (w *ccWindow) rto() {
	w.rtoStreak = true
	w.cwndB = w.smss
	w.abcLimit = w.smss
	w.caAcked = 0
}

// restartAfterIdle is RFC 5681 §4.1: a TCP SHOULD set cwnd to no more than
// RW = min(IW, cwnd) if it has not sent data for longer than the RTO. It
// reports whether it applied.
func (w *ccWindow) restartAfterIdle(idle, rto time.Duration) bool {
	if idle <= rto {
		return false
	}
	w.cwndB = min(w.cwndB, ccInitialWindow(w.smss))
	return true
}
