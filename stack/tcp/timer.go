package tcp

import (
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// timers holds every deadline of a TCB; the zero time means "not armed".
type timers struct {
	rtoAt       clock.Time // retransmission (data, FIN, SYN, SYN-ACK)
	delackAt    clock.Time // delayed ACK
	persistAt   clock.Time // zero-window probe
	keepaliveAt clock.Time
	timeWaitAt  clock.Time
	finWait2At  clock.Time
	bufIdleAt   clock.Time // release of empty buffers' memory (Config.BufferIdle)
	ptoAt       clock.Time // tail loss probe (RFC 8985 §7.2)

	rtoRetries     int // consecutive expiries for the same SND.UNA
	persistBackoff int
	kaProbes       int // unanswered keepalive probes
}

// rtt is the RFC 6298 estimator.
type rtt struct {
	srtt, rttvar time.Duration
	rto          time.Duration // before backoff
	hasSample    bool
	backoff      uint // RFC 6298 §5.5 doublings since the last new ACK

	// Karn's algorithm (RFC 6298 §3) without timestamps: one segment is
	// timed at a time and the sample is dropped if it is retransmitted.
	timing  bool
	timedSq Seq
	timedAt clock.Time
}

// clockGranularity is G of RFC 6298 §2: our timestamps tick in ms.
const clockGranularity = time.Millisecond

func (r *rtt) init(cfg *Config) { r.rto = cfg.InitialRTO }

// rttSample folds one measurement into SRTT and RTTVAR (RFC 6298 §2.2,
// §2.3) and recomputes RTO, clamped to [MinRTO, MaxRTO] (§2.4, §2.5).
func (t *TCB) rttSample(r time.Duration) {
	t.tlpSampled = true
	r = max(r, 0)
	if !t.hasSample {
		t.srtt, t.rttvar, t.hasSample = r, r/2, true
	} else {
		d := t.srtt - r
		if d < 0 {
			d = -d
		}
		t.rttvar = (3*t.rttvar + d) / 4
		t.srtt = (7*t.srtt + r) / 8
	}
	t.rto = min(max(t.srtt+max(clockGranularity, 4*t.rttvar), t.cfg.MinRTO), t.cfg.MaxRTO)
}

// currentRTO is the RTO with the exponential backoff of RFC 6298 §5.5,
// capped at MaxRTO.
func (t *TCB) currentRTO() time.Duration {
	d := t.rto
	for i := uint(0); i < t.backoff && d < t.cfg.MaxRTO; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxRTO)
}

// armRTO (re)starts the retransmission timer (RFC 6298 §5.1, §5.3).
func (t *TCB) armRTO() { t.rtoAt = t.now.Add(t.currentRTO()) }

// armRTOIfIdle starts the timer only if it is not running (RFC 6298 §5.1).
func (t *TCB) armRTOIfIdle() {
	if t.rtoAt == 0 {
		t.armRTO()
	}
}

func (t *TCB) stopAllTimers() {
	t.rtoAt, t.delackAt, t.persistAt = 0, 0, 0
	t.keepaliveAt, t.timeWaitAt, t.finWait2At = 0, 0, 0
	t.bufIdleAt, t.ptoAt = 0, 0
}

// armFinWait2 bounds FIN-WAIT-2 once nobody can read from the connection
// any more: after CloseWrite alone the peer may keep sending for as long
// as it likes (half-close), as on Linux.
func (t *TCB) armFinWait2() {
	if t.state == FinWait2 && t.orphaned && t.cfg.FinWait2Timeout > 0 {
		t.finWait2At = t.now.Add(t.cfg.FinWait2Timeout)
	}
}

// armKeepalive restarts the idle period after a segment arrived (RFC 9293
// §3.8.4: only when no data is in flight and keepalives are enabled).
func (t *TCB) armKeepalive() {
	if t.cfg.KeepaliveIdle <= 0 {
		return
	}
	t.kaProbes = 0
	t.keepaliveAt = t.now.Add(t.cfg.KeepaliveIdle)
}

// Deadline returns when OnTimer must run next; zero when no timer is
// armed.
func (t *TCB) Deadline() clock.Time {
	var d clock.Time
	for _, at := range [...]clock.Time{t.rtoAt, t.delackAt, t.persistAt, t.keepaliveAt, t.timeWaitAt, t.finWait2At, t.bufIdleAt, t.ptoAt} {
		if at != 0 && (d == 0 || at.Before(d)) {
			d = at
		}
	}
	return d
}

func due(at, now clock.Time) bool { return at != 0 && !now.Before(at) }

// OnTimer runs every timer that is due at now. Call Output afterwards.
func (t *TCB) OnTimer(now clock.Time) {
	t.now = now
	if due(t.timeWaitAt, now) {
		t.timeWaitAt = 0
		t.close(errNormalClose, "TIME-WAIT 2MSL expired")
		return
	}
	if due(t.finWait2At, now) {
		t.finWait2At = 0
		t.count(func(c *Counters) *atomic.Uint64 { return &c.Timeouts })
		t.close(errNormalClose, "FIN-WAIT-2 timeout")
		return
	}
	if due(t.rtoAt, now) {
		t.rtoAt = 0
		t.onRTO()
	}
	if due(t.ptoAt, now) {
		t.ptoAt = 0
		t.onPTO()
	}
	if due(t.persistAt, now) {
		t.persistAt = 0
		t.onPersist()
	}
	if due(t.keepaliveAt, now) {
		t.keepaliveAt = 0
		t.onKeepalive()
	}
	if due(t.delackAt, now) {
		t.delackAt = 0
		t.ackNow = true
	}
	if due(t.bufIdleAt, now) {
		t.bufIdleAt = 0
		t.onBufferIdle()
	}
}

// onRTO handles expiry of the retransmission timer.
func (t *TCB) onRTO() {
	switch t.state {
	case SynReceived, SynSent:
		t.onHandshakeRTO()
		return
	case Closed, TimeWait:
		return
	}
	if t.sndUna == t.sndMax {
		return // everything was acknowledged meanwhile (RFC 6298 §5.2)
	}
	if t.rtoRetries >= t.cfg.MaxRetransmits {
		t.count(func(c *Counters) *atomic.Uint64 { return &c.Timeouts })
		t.close(ErrTimeout, "retransmissions exhausted")
		return
	}
	t.count(func(c *Counters) *atomic.Uint64 { return &c.RTOs })
	t.resetTLP() // RFC 8985 §7.1: RTO recovery
	t.rtoRetries++
	// RFC 5681 §3.1 eq. 4 (inside cc), computed before SND.NXT is pulled
	// back so that the flight size is what was outstanding.
	t.cc.onRTO(t.now, t.flight())
	// Go back N: everything from SND.UNA is sent again (RFC 6298 §5.4 asks
	// for the earliest segment; the rest follows as the window allows).
	t.sndNxt = t.sndUna
	t.timing = false // Karn: no sample from retransmitted data
	t.exitRecoveryOnRTO()
	t.backoff++ // RFC 6298 §5.5
	t.armRTO()  // RFC 6298 §5.6
}

// onHandshakeRTO retransmits the SYN or SYN-ACK with backoff until the
// retries are used up (RFC 9293 §3.8.1, RFC 6298 §5).
func (t *TCB) onHandshakeRTO() {
	if t.rtoRetries >= t.cfg.SynAckRetries {
		t.count(func(c *Counters) *atomic.Uint64 { return &c.Timeouts })
		if t.state == SynSent {
			t.close(ErrTimeout, "SYN retransmissions exhausted")
		} else {
			t.close(ErrTimeout, "SYN-ACK retransmissions exhausted")
		}
		return
	}
	t.rtoRetries++
	t.backoff++
	t.synDue = true
	t.timing = false
	t.armRTO()
}

// onPersist sends a zero-window probe and backs off (RFC 9293 §3.8.6.1:
// probes continue as long as the peer answers; the connection is never
// closed for a zero window). With an open window too small for sender SWS
// avoidance it is the override timeout of §3.8.6.2.1 instead.
func (t *TCB) onPersist() {
	if !t.hasUnsent() {
		t.persistBackoff = 0
		return
	}
	t.probeDue = true
	if t.sndWnd == 0 {
		t.persistBackoff++
		t.armPersist()
	}
}

// armPersist starts the probe timer at RTO, doubling per probe.
func (t *TCB) armPersist() {
	d := t.currentRTO()
	for i := 0; i < t.persistBackoff && d < t.cfg.MaxRTO; i++ {
		d *= 2
	}
	t.persistAt = t.now.Add(min(d, t.cfg.MaxRTO))
}

// onKeepalive sends a probe or gives up (RFC 9293 §3.8.4).
func (t *TCB) onKeepalive() {
	if t.cfg.KeepaliveIdle <= 0 || (t.state != Established && t.state != CloseWait) {
		return
	}
	if t.sndUna != t.sndMax { // data in flight: the RTO watches the peer
		t.keepaliveAt = t.now.Add(t.cfg.KeepaliveIdle)
		return
	}
	if t.kaProbes >= t.cfg.KeepaliveCount {
		t.count(func(c *Counters) *atomic.Uint64 { return &c.Timeouts })
		t.close(ErrTimeout, "keepalive timeout")
		return
	}
	t.kaProbes++
	t.kaDue = true
	t.keepaliveAt = t.now.Add(t.cfg.KeepaliveInterval)
}

// tsNow is our timestamp clock: milliseconds since TSEpoch plus the
// per-connection offset (RFC 7323 §5.4 recommends a random offset).
func (t *TCB) tsNow() uint32 {
	return t.tsOffset + uint32(t.now.Sub(t.tsEpoch)/time.Millisecond)
}
