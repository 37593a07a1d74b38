package proxy

import (
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
