package proxy

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// NATMode is how UDP flows map onto upstream sockets (RFC 4787 §4.1, §5).
type NATMode uint8

const (
	// NATFullCone is endpoint-independent mapping and filtering: one
	// upstream (socket or SOCKS5 association) per app address and port
	// and outbound, used for every destination the app socket sends to,
	// and a datagram from any remote to it reaches the app from that
	// remote. What RFC 4787 recommends (REQ-1, REQ-8) and what voice,
	// games, WebRTC and peer-to-peer need. It applies to outbounds whose
	// Dialer is a PacketDialer; other flows are symmetric.
	NATFullCone NATMode = iota
	// NATSymmetric is address-and-port-dependent mapping and filtering:
	// one connected upstream socket per flow (app address and port,
	// destination address and port), which hears only that destination.
	NATSymmetric
)

func (m NATMode) String() string {
	if m == NATSymmetric {
		return "symmetric"
	}
	return "full-cone"
}

// DefaultMaxUDPSessions bounds the UDP sessions when Options leave it
// zero; each holds an upstream socket (two with SOCKS5).
const DefaultMaxUDPSessions = 4096

// lruGranularity is how stale a session's place in the LRU order may be:
// a datagram moves its session to the front at most this often, so the
// per-datagram cost is one clock read and an atomic store.
const lruGranularity = time.Second

// udpTable holds the UDP sessions of a Proxy, full-cone ones by key, all
// of them in least-recently-used order for eviction at the limit.
type udpTable struct {
	clk clock.Clock

	mu    sync.Mutex // guards the fields below and the entries' elem
	max   int
	cones map[coneKey]*coneSession
	lru   list.List // of *udpEntry, most recently used first
}

// udpEntry is one session's place in the table.
type udpEntry struct {
	elem  *list.Element // guarded by the table's mu; nil once removed
	moved atomic.Int64  // clock.Time of the last move to the front
	evict func()        // ends the session; called without locks held
}

func newUDPTable(clk clock.Clock, max int) *udpTable {
	if max <= 0 {
		max = DefaultMaxUDPSessions
	}
	return &udpTable{clk: clk, max: max, cones: make(map[coneKey]*coneSession)}
}

// setMax changes the limit (0: DefaultMaxUDPSessions) and returns the
// entries past it, least recently used first, taken out of the table for
// the caller to evict.
func (t *udpTable) setMax(max int) (victims []*udpEntry) {
	if max <= 0 {
		max = DefaultMaxUDPSessions
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.max = max
	for t.lru.Len() > t.max {
		v := t.lru.Back().Value.(*udpEntry)
		t.lru.Remove(v.elem)
		v.elem = nil
		victims = append(victims, v)
	}
	return victims
}

func (t *udpTable) maxSessions() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.max
}

// addLocked puts e at the front and returns the least recently used
// entry, taken out of the table, when that made more than max: the
// caller evicts it once the lock is released.
func (t *udpTable) addLocked(e *udpEntry) (victim *udpEntry) {
	e.elem = t.lru.PushFront(e)
	e.moved.Store(int64(t.clk.Now()))
	if t.lru.Len() <= t.max {
		return nil
	}
	victim = t.lru.Back().Value.(*udpEntry)
	t.lru.Remove(victim.elem)
	victim.elem = nil
	return victim
}

// add is addLocked under the lock.
func (t *udpTable) add(e *udpEntry) (victim *udpEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addLocked(e)
}

// touch records use of e: it moves to the front unless it did so less
// than lruGranularity ago.
func (t *udpTable) touch(e *udpEntry) {
	now := t.clk.Now()
	if now.Sub(clock.Time(e.moved.Load())) < lruGranularity {
		return
	}
	e.moved.Store(int64(now))
	t.mu.Lock()
	if e.elem != nil {
		t.lru.MoveToFront(e.elem)
	}
	t.mu.Unlock()
}

// remove takes e out of the LRU order.
func (t *udpTable) remove(e *udpEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.elem != nil {
		t.lru.Remove(e.elem)
		e.elem = nil
	}
}
