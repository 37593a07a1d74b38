package proxy

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/stack"
)

// ConnInfo describes one flow the proxy carries now, as the connections
// API shows it: a TCP relay, or a UDP flow (one app socket and one
// destination; in full-cone NAT several flows of one app socket share an
// upstream socket).
type ConnInfo struct {
	// ID is unique among the flows of one Proxy, never reused.
	ID uint64
	// Network is "tcp" or "udp".
	Network string
	// Flow is the app's address and the destination it addressed.
	Flow stack.FlowID
	// Domain is the flow's name when known (fake IP, sniffed), else "".
	Domain string
	// Outbound and Rule are the Route's: the outbound's name and the
	// index of the rule that chose it, -1 for the final outbound.
	Outbound string
	Rule     int
	// Age is how long ago the flow was accepted.
	Age time.Duration
	// Up and Down count payload bytes app→upstream and upstream→app.
	Up, Down uint64
	// State is the app side's TCP state ("ESTABLISHED", "FIN-WAIT-2");
	// "" for UDP.
	State string
}

// connEntry is the live record behind a ConnInfo.
type connEntry struct {
	id       uint64
	network  string
	flow     stack.FlowID
	domain   string
	outbound string
	rule     int
	start    clock.Time
	up, down atomic.Uint64
	app      any    // the stack's conn; State() when it has one
	abort    func() // ends the flow: a RST to the app for TCP; safe to call twice
}

func (e *connEntry) count(from Side, n int) {
	if from == SideApp {
		e.up.Add(uint64(n))
	} else {
		e.down.Add(uint64(n))
	}
}

// connTable holds the flows being relayed, for Connections and
// CloseConnection. Adding and removing is one map operation under a
// lock, once per flow; nothing per packet.
type connTable struct {
	last atomic.Uint64 // the last ID handed out
	mu   sync.Mutex    // guards m
	m    map[uint64]*connEntry
}

// newID hands out the next flow ID.
func (t *connTable) newID() uint64 { return t.last.Add(1) }

// newEntry returns the record of flow cid (0: a new ID), routed by rt;
// it is not listed until add, and abort may be set until then.
func (p *Proxy) newEntry(cid uint64, network string, id stack.FlowID, rt Route, app any, abort func()) *connEntry {
	if cid == 0 {
		cid = p.conns.newID()
	}
	return &connEntry{id: cid, network: network, flow: id, domain: rt.Domain, outbound: rt.Outbound,
		rule: rt.Rule, start: p.clock.Now(), app: app, abort: abort}
}

// add lists e.
func (t *connTable) add(e *connEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[uint64]*connEntry)
	}
	t.m[e.id] = e
}

func (t *connTable) remove(e *connEntry) {
	t.mu.Lock()
	delete(t.m, e.id)
	t.mu.Unlock()
}

// Connections returns the flows relayed now, oldest first.
func (p *Proxy) Connections() []ConnInfo {
	p.conns.mu.Lock()
	es := make([]*connEntry, 0, len(p.conns.m))
	for _, e := range p.conns.m {
		es = append(es, e)
	}
	p.conns.mu.Unlock()
	slices.SortFunc(es, func(a, b *connEntry) int { return cmp.Compare(a.id, b.id) })
	now := p.clock.Now()
	out := make([]ConnInfo, len(es))
	for i, e := range es {
		out[i] = ConnInfo{ID: e.id, Network: e.network, Flow: e.flow, Domain: e.domain,
			Outbound: e.outbound, Rule: e.rule, Age: now.Sub(e.start),
			Up: e.up.Load(), Down: e.down.Load()}
		if sc, ok := e.app.(interface{ State() string }); ok {
			out[i].State = sc.State()
		}
	}
	return out
}

// CloseConnection ends the flow id: a TCP relay is aborted both ways (a
// RST to the app and to the upstream), a UDP flow closed. It reports
// whether the flow was open. The flow leaves the list once its relay
// has ended, which may take a moment after the call.
func (p *Proxy) CloseConnection(id uint64) bool {
	p.conns.mu.Lock()
	e := p.conns.m[id]
	p.conns.mu.Unlock()
	if e == nil {
		return false
	}
	p.stats.closedByAPI.Add(1)
	e.abort()
	return true
}

// CloseAllConnections ends every flow open now, as CloseConnection does,
// and returns how many.
func (p *Proxy) CloseAllConnections() int {
	p.conns.mu.Lock()
	es := make([]*connEntry, 0, len(p.conns.m))
	for _, e := range p.conns.m {
		es = append(es, e)
	}
	p.conns.mu.Unlock()
	for _, e := range es {
		p.stats.closedByAPI.Add(1)
		e.abort()
	}
	return len(es)
}
