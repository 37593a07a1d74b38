package proxy

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// Connection limits. Every TCP flow the proxy handles holds one upstream
// socket, a file descriptor, from its dial until its relay ends; the app
// side lives in the userspace stack and costs none. So the number of open
// descriptors, not memory, is what runs out first under a connection storm,
// and when it does every dial fails with EMFILE. MaxConnections bounds the
// flows in progress (dialing or relaying) below that: a SYN past it is
// answered with a RST at once, which the app sees as a refused connect,
// instead of a dial that cannot succeed.

// warnInterval is how often a limit warning may be logged.
const warnInterval = 10 * time.Second

// isFDExhausted reports whether err says the process (EMFILE) or the
// system (ENFILE) ran out of file descriptors.
func isFDExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// warner logs a warning at most once per interval and says how many it
// held back in between, so that a storm of refused SYNs is one line every
// few seconds, not one per SYN.
type warner struct {
	clk   clock.Clock
	every time.Duration

	mu   sync.Mutex
	next clock.Time // no warning before this
	held int        // warnings suppressed since the last one logged
}

func (w *warner) warn(log *slog.Logger, msg string, args ...any) {
	w.mu.Lock()
	now := w.clk.Now()
	if w.next != 0 && now < w.next {
		w.held++
		w.mu.Unlock()
		return
	}
	held := w.held
	w.held, w.next = 0, now.Add(w.every)
	w.mu.Unlock()
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	log.Warn(msg, args...)
}

// admit counts a new TCP flow in, or reports false when MaxConnections
// flows are in progress; a flow admitted must be let out with release.
func (p *Proxy) admit() bool {
	n := p.stats.tcpOpen.Add(1)
	if m := p.limits().maxConns; m > 0 && n > int64(m) {
		p.stats.tcpOpen.Add(-1)
		return false
	}
	return true
}

func (p *Proxy) release() { p.stats.tcpOpen.Add(-1) }
