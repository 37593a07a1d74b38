package tcp

import "sync/atomic"

// Counters are connection-level event counts shared by every TCB of an
// engine (Config.Stats). All fields are updated atomically; read them with
// Load. A nil *Counters disables counting.
type Counters struct {
	ChallengeAcks            atomic.Uint64 // RFC 5961 challenge ACKs sent
	ChallengeAcksRateLimited atomic.Uint64 // challenge ACKs suppressed by RFC 5961 §7 limit
	RSTsSent                 atomic.Uint64
	RSTsReceived             atomic.Uint64 // RSTs that reset a connection
	Retransmits              atomic.Uint64 // data/FIN segments sent again
	RetransmittedBytes       atomic.Uint64 // payload bytes in those segments
	LostRetransmits          atomic.Uint64 // SACK recovery found its retransmissions lost and resent them
	SynAckRetransmits        atomic.Uint64
	FastRetransmits          atomic.Uint64
	RTOs                     atomic.Uint64 // retransmission timer expiries
	TLPProbes                atomic.Uint64 // tail loss probes sent (RFC 8985 §7.3)
	TLPRecoveries            atomic.Uint64 // probes that repaired a loss (RFC 8985 §7.4.2)
	DupAcks                  atomic.Uint64
	OutOfOrder               atomic.Uint64 // segments queued beyond RCV.NXT
	DroppedSegments          atomic.Uint64
	PAWSRejected             atomic.Uint64
	PersistProbes            atomic.Uint64
	KeepalivesSent           atomic.Uint64
	TimeWaitReuses           atomic.Uint64 // SYNs AcceptsNewSyn said yes to
	Timeouts                 atomic.Uint64 // connections closed by a give-up timer
}

// count adds one to the counter pick selects, if counting is on. pick is
// a non-capturing function literal, so the call does not allocate.
func (t *TCB) count(pick func(*Counters) *atomic.Uint64) {
	if t.stats != nil {
		pick(t.stats).Add(1)
	}
}

// countN adds n to the counter pick selects, if counting is on.
func (t *TCB) countN(pick func(*Counters) *atomic.Uint64, n uint64) {
	if t.stats != nil {
		pick(t.stats).Add(n)
	}
}
