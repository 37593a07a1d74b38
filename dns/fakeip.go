// Package dns is the gateway's DNS side: a fake-IP pool that hands each
// domain an address of its own (so a connection to that address is a
// connection to the domain), a forwarder with a TTL cache that remembers
// which domain each real address answered for, and a server that answers
// the queries hijacked from the TUN. It works on messages, not sockets: the
// gateway hands it the datagrams and streams of hijacked flows.
package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
)

// Pool assigns fake addresses to domains: the same addresses for the same
// domain for as long as it is in the pool, a new domain evicting the least
// recently used one when a range is full. Its methods are safe for
// concurrent use.
type Pool struct {
	v4, v6   netip.Prefix
	reserved []netip.Addr
	store    Store // nil: not persisted

	mu       sync.Mutex // guards everything below
	byDomain map[string]*entry
	byAddr   map[netip.Addr]*entry
	lru      entry // sentinel of the ring, most recent first
	next     [2]netip.Addr
	capacity int
	seq      uint64 // last use stamp handed out
	dirty    map[*entry]bool
}

// entry is one domain and its addresses, a node of the LRU ring.
type entry struct {
	domain     string
	v4, v6     netip.Addr
	used       uint64
	prev, next *entry
}

// Mapping is a domain's fake addresses as a Store keeps them; Used orders
// them by last use.
type Mapping struct {
	Domain string
	V4, V6 netip.Addr
	Used   uint64
}

// Store persists a Pool's mappings (see OpenStore).
type Store interface {
	Load() ([]Mapping, error)
	Put([]Mapping) error
	Delete(domains []string) error
	Close() error
}

// ErrNotFake is returned by NewPool for a range that cannot hold fake
// addresses.
var ErrNotFake = errors.New("dns: fake-IP range too small")

// NewPool makes a pool over the ranges v4 (IPv4) and v6 (IPv6); reserved
// addresses (the TUN's own) and each range's first address are never
// handed out. With store, the pool starts with the stored mappings and
// keeps every new one there.
func NewPool(v4, v6 netip.Prefix, reserved []netip.Addr, store Store) (*Pool, error) {
	if !v4.Addr().Is4() || v4.Bits() > 30 || !v6.Addr().Is6() || v6.Bits() > 126 {
		return nil, fmt.Errorf("%w: want at most /30 and /126, got %s and %s", ErrNotFake, v4, v6)
	}
	p := &Pool{v4: v4.Masked(), v6: v6.Masked(), reserved: reserved, store: store,
		byDomain: map[string]*entry{}, byAddr: map[netip.Addr]*entry{}, dirty: map[*entry]bool{}}
	p.lru.prev, p.lru.next = &p.lru, &p.lru
	p.capacity = min(usable(p.v4, reserved), usable(p.v6, reserved))
	p.next = [2]netip.Addr{p.v4.Addr().Next(), p.v6.Addr().Next()}
	if store != nil {
		if err := p.load(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// usable counts the addresses of p a pool may hand out, capped so that
// a huge IPv6 range does not overflow.
func usable(p netip.Prefix, reserved []netip.Addr) int {
	host := p.Addr().BitLen() - p.Bits()
	if host >= 31 {
		return 1 << 30
	}
	n := 1<<host - 1 // not the first address
	for _, r := range reserved {
		if p.Contains(r) && r != p.Addr() {
			n--
		}
	}
	return n
}

func (p *Pool) load() error {
	ms, err := p.store.Load()
	if err != nil {
		return err
	}
	slices.SortFunc(ms, func(a, b Mapping) int { return compareUint(a.Used, b.Used) })
	var drop []string
	for _, m := range ms {
		if !p.v4.Contains(m.V4) || !p.v6.Contains(m.V6) || p.byAddr[m.V4] != nil || p.byAddr[m.V6] != nil || p.isReserved(m.V4) || p.isReserved(m.V6) {
			drop = append(drop, m.Domain) // from another range, or damaged
			continue
		}
		e := &entry{domain: m.Domain, v4: m.V4, v6: m.V6, used: m.Used}
		p.insertLocked(e)
		p.seq = max(p.seq, m.Used)
		for i, a := range []netip.Addr{m.V4, m.V6} {
			if a.Compare(p.next[i]) >= 0 {
				p.next[i] = a.Next()
			}
		}
	}
	for len(p.byDomain) > p.capacity {
		drop = append(drop, p.evictLocked().domain)
	}
	if len(drop) > 0 {
		return p.store.Delete(drop)
	}
	return nil
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Contains reports whether a is in one of the pool's ranges.
func (p *Pool) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return p.v4.Contains(a) || p.v6.Contains(a)
}

// Lookup returns the domain a fake address was handed out for.
func (p *Pool) Lookup(a netip.Addr) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byAddr[a.Unmap()]
	if e == nil {
		return "", false
	}
	p.touchLocked(e)
	return e.domain, true
}

// Assign returns domain's fake addresses, handing out new ones (and
// evicting the least recently used domain when the pool is full) the
// first time. A Store failure is returned with the addresses, which are
// valid for this run.
func (p *Pool) Assign(domain string) (v4, v6 netip.Addr, err error) {
	m, evicted, fresh := p.assign(domain)
	if fresh && p.store != nil {
		// Written outside the lock: a write waits for its transaction.
		if evicted != "" {
			err = p.store.Delete([]string{evicted})
		}
		err = errors.Join(err, p.store.Put([]Mapping{m}))
	}
	return m.V4, m.V6, err
}

func (p *Pool) assign(domain string) (m Mapping, evicted string, fresh bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.byDomain[domain]; e != nil {
		p.touchLocked(e)
		return e.mapping(), "", false
	}
	e := &entry{domain: domain}
	if len(p.byDomain) >= p.capacity {
		old := p.evictLocked()
		evicted = old.domain
		e.v4, e.v6 = old.v4, old.v6
	} else {
		e.v4, e.v6 = p.allocLocked(0), p.allocLocked(1)
	}
	p.seq++
	e.used = p.seq
	p.insertLocked(e)
	return e.mapping(), evicted, true
}

// allocLocked returns the next free address of range i (0 IPv4, 1 IPv6),
// wrapping around; the caller knows one is free.
func (p *Pool) allocLocked(i int) netip.Addr {
	r := [2]netip.Prefix{p.v4, p.v6}[i]
	for {
		a := p.next[i]
		if !r.Contains(a) {
			a = r.Addr().Next()
		}
		p.next[i] = a.Next()
		if p.byAddr[a] == nil && !p.isReserved(a) {
			return a
		}
	}
}

func (p *Pool) isReserved(a netip.Addr) bool { return slices.Contains(p.reserved, a) }

func (p *Pool) insertLocked(e *entry) {
	p.byDomain[e.domain] = e
	p.byAddr[e.v4], p.byAddr[e.v6] = e, e
	e.prev, e.next = &p.lru, p.lru.next
	e.next.prev, p.lru.next = e, e
}

func (p *Pool) unlinkLocked(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
}

// evictLocked removes the least recently used entry and returns it.
func (p *Pool) evictLocked() *entry {
	e := p.lru.prev
	p.unlinkLocked(e)
	delete(p.byDomain, e.domain)
	delete(p.byAddr, e.v4)
	delete(p.byAddr, e.v6)
	delete(p.dirty, e)
	return e
}

func (p *Pool) touchLocked(e *entry) {
	p.seq++
	e.used = p.seq
	p.unlinkLocked(e)
	e.prev, e.next = &p.lru, p.lru.next
	e.next.prev, p.lru.next = e, e
	if p.store != nil {
		p.dirty[e] = true
	}
}

func (e *entry) mapping() Mapping { return Mapping{Domain: e.domain, V4: e.v4, V6: e.v6, Used: e.used} }

// Len is the number of domains in the pool; Capacity how many fit.
func (p *Pool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byDomain)
}

// Capacity is how many domains the pool holds before it evicts.
func (p *Pool) Capacity() int { return p.capacity }

// Flush writes the last-use order of the domains used since the last
// flush to the store, so that eviction after a restart follows it. New
// mappings are stored when they are made; only the order waits for Flush.
func (p *Pool) Flush() error {
	p.mu.Lock()
	ms := make([]Mapping, 0, len(p.dirty))
	for e := range p.dirty {
		ms = append(ms, e.mapping())
	}
	clear(p.dirty)
	p.mu.Unlock()
	if p.store == nil || len(ms) == 0 {
		return nil
	}
	return p.store.Put(ms)
}

// Close flushes and closes the store.
func (p *Pool) Close() error {
	if p.store == nil {
		return nil
	}
	return errors.Join(p.Flush(), p.store.Close())
}
