package tcp

import (
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// ChallengeLimiter bounds the RFC 5961 §7 challenge ACKs of all the
// connections that share it to a number per second, on top of each
// connection's own ChallengeAckLimit: "an implementation MAY ... limit
// the number of challenge ACKs ... across all connections" (as Linux's
// tcp_challenge_ack_limit does), so that a flood over many 4-tuples
// cannot make the engine answer every segment. It is lock-free; at the
// turn of a second a few more may pass than the limit. The connections
// sharing one must read one clock, as an engine's do.
type ChallengeLimiter struct {
	limit  int64
	window atomic.Int64 // start of the current second, a clock.Time
	count  atomic.Int64 // challenge ACKs in it
}

// NewChallengeLimiter allows perSecond challenge ACKs a second, across
// the connections whose Config points to it.
func NewChallengeLimiter(perSecond int) *ChallengeLimiter {
	return &ChallengeLimiter{limit: int64(perSecond)}
}

// allow reports whether one more challenge ACK may be sent at now.
func (l *ChallengeLimiter) allow(now clock.Time) bool {
	n := int64(now)
	if w := l.window.Load(); n-w >= int64(time.Second) && l.window.CompareAndSwap(w, n) {
		l.count.Store(0)
	}
	return l.count.Add(1) <= l.limit
}
