package proxy

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/tungate/tungate/stack"
)

// RelayRunning reports whether an evented relay of flow id is running.
func (p *Proxy) RelayRunning(id stack.FlowID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for r := range p.relays {
		if r.id == id {
			return true
		}
	}
	return false
}

// UseGoroutineRelays makes p relay every flow with tcpRelay, a goroutine
// per direction. Call it before the first flow.
func (p *Proxy) UseGoroutineRelays() { p.evented = false }

// WaitRelayEnd waits up to limit for flow id's evented relay to end.
func (p *Proxy) WaitRelayEnd(id stack.FlowID, limit time.Duration) {
	for giveUp := time.Now().Add(limit); p.RelayRunning(id) && time.Now().Before(giveUp); {
		time.Sleep(time.Millisecond)
	}
}

// CountSocketReads counts the read system calls of the evented relays'
// kernel sockets until the test ends.
func CountSocketReads(t *testing.T) *atomic.Int64 {
	n := new(atomic.Int64)
	count := func() { n.Add(1) }
	testHookSocketRead.Store(&count)
	t.Cleanup(func() { testHookSocketRead.Store(nil) })
	return n
}

// RelaysIdle reports whether no evented relay is running a pass.
func (p *Proxy) RelaysIdle() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for r := range p.relays {
		if r.sched.Load() != schedIdle {
			return false
		}
	}
	return true
}
