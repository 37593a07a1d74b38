package faulty

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// DirStats counts what happened to the packets of one direction. Every
// packet that entered is, at any moment, accounted for:
//
//	Packets + Duplicated == Dropped + Delivered + Discarded + Pending
type DirStats struct {
	Packets    uint64 // packets that entered the fault stage
	Dropped    uint64 // dropped by Loss
	Duplicated uint64 // packets that got a second copy
	Reordered  uint64 // packets held back by Reorder
	Delayed    uint64 // packets given a delay above zero by Delay and Jitter
	Delivered  uint64 // copies handed on: returned by Read, or written by the wrapped device
	Discarded  uint64 // copies lost to Close, a failed write, or a Read buffer too small for them
	Pending    uint64 // copies held or waiting for their due time now
}

// Stats is a snapshot of a Device's counters.
type Stats struct {
	Inbound, Outbound DirStats
}

// item is one packet copy waiting for delivery.
type item struct {
	buf []byte // the packet is buf[off:]
	off int
	due clock.Time
	seq uint64 // enqueue order, the tie-breaker for equal due times
	src int    // index in the Write call that made it when buf is the caller's, else -1
}

func (it *item) packet() []byte { return it.buf[it.off:] }

// heldItem is a packet held back for reordering.
type heldItem struct {
	item
	copies   int        // 1, or 2 when it was also duplicated
	wait     int        // packets still to let pass before it
	deadline clock.Time // when it is released anyway
}

// line applies the faults of one direction to the packets passing through
// it, in the order they arrive. It does no I/O and keeps no goroutine: the
// Device feeds it packets with the current time and takes out the items
// that are due.
type line struct {
	cfg     *Config
	depth   int
	timeout time.Duration
	script  func() verdict // replaces the random draw in tests; nil in use

	// mu guards the fields below.
	mu    sync.Mutex
	rng   *rand.Rand
	seq   uint64
	queue []item     // waiting for their due time, sorted by due (stable)
	held  []heldItem // held back for reordering, in arrival order
	stats DirStats
}

// Distinct PCG streams per direction, so that the two directions of one
// seed do not see the same random sequence.
const (
	inboundStream  = 0x696e626f756e64 // "inbound"
	outboundStream = 0x6f7574626f756e64
)

func newLine(cfg *Config, stream uint64) *line {
	return &line{
		cfg:     cfg,
		depth:   cfg.reorderDepth(),
		timeout: cfg.reorderTimeout(),
		rng:     rand.New(rand.NewPCG(uint64(cfg.Seed), stream)),
	}
}

// verdict is the fate of one packet.
type verdict struct {
	drop, dup, hold bool
	delay           time.Duration
}

// decideLocked draws the packet's fate. It draws the same numbers for
// every packet whatever the outcome, so a packet's fate depends only on
// the seed, the configuration and its position in the sequence.
func (l *line) decideLocked() verdict {
	if l.script != nil {
		return l.script()
	}
	v := verdict{
		drop:  l.rng.Float64() < l.cfg.Loss,
		dup:   l.rng.Float64() < l.cfg.Duplicate,
		hold:  l.rng.Float64() < l.cfg.Reorder,
		delay: l.cfg.Delay,
	}
	if j := l.cfg.Jitter; j > 0 {
		v.delay += time.Duration(l.rng.Int64N(2*int64(j)+1)) - j
	}
	v.delay = max(v.delay, 0)
	return v
}

// admitLocked takes in the packet buf[off:] that arrived at now. With
// alias, buf may be kept as it is if the packet is due at once (the caller
// delivers due items before reusing buf); otherwise it is copied, and so
// is every second copy or held packet. src is recorded in an aliased item.
func (l *line) admitLocked(buf []byte, off int, now clock.Time, alias bool, src int) {
	l.stats.Packets++
	v := l.decideLocked()
	if v.drop {
		l.stats.Dropped++
		return
	}
	copies := 1
	if v.dup {
		copies = 2
		l.stats.Duplicated++
	}
	if v.delay > 0 {
		l.stats.Delayed++
	}
	due := now.Add(v.delay)
	if v.hold {
		l.stats.Reordered++
		it := item{buf: clone(buf, off), off: off, due: due, src: -1}
		l.held = append(l.held, heldItem{item: it, copies: copies, wait: l.depth, deadline: now.Add(l.timeout)})
		return
	}
	it := item{buf: buf, off: off, due: due, src: src}
	if !alias || due > now {
		it.buf, it.src = clone(buf, off), -1
	}
	l.enqueueLocked(it, copies)
	l.passLocked(due)
}

// passLocked counts a packet that went through for the held ones, and
// releases those that have waited for enough packets right behind it.
func (l *line) passLocked(due clock.Time) {
	kept := l.held[:0]
	for _, h := range l.held {
		h.wait--
		if h.wait > 0 {
			kept = append(kept, h)
			continue
		}
		h.due = max(h.due, due)
		l.enqueueLocked(h.item, h.copies)
	}
	clear(l.held[len(kept):])
	l.held = kept
}

// expireLocked releases the held packets whose timeout has passed.
func (l *line) expireLocked(now clock.Time) {
	kept := l.held[:0]
	for _, h := range l.held {
		if h.deadline > now {
			kept = append(kept, h)
			continue
		}
		h.due = max(h.due, h.deadline)
		l.enqueueLocked(h.item, h.copies)
	}
	clear(l.held[len(kept):])
	l.held = kept
}

// releaseAllLocked makes everything held or delayed due at now, in the
// order it would have been delivered, with the held packets behind.
func (l *line) releaseAllLocked(now clock.Time) {
	for i := range l.queue {
		l.queue[i].due = min(l.queue[i].due, now)
	}
	for _, h := range l.held {
		h.due = now
		l.enqueueLocked(h.item, h.copies)
	}
	clear(l.held)
	l.held = l.held[:0]
}

// enqueueLocked inserts copies of it, the second a fresh copy, in due
// order.
func (l *line) enqueueLocked(it item, copies int) {
	for c := range copies {
		if c > 0 {
			it.buf, it.src = clone(it.buf, it.off), -1
		}
		it.seq = l.seq
		l.seq++
		i := len(l.queue)
		for i > 0 && l.queue[i-1].due > it.due {
			i--
		}
		l.queue = slices.Insert(l.queue, i, it)
	}
}

// peekDueLocked returns the first item due by now.
func (l *line) peekDueLocked(now clock.Time) (*item, bool) {
	if len(l.queue) == 0 || l.queue[0].due > now {
		return nil, false
	}
	return &l.queue[0], true
}

// popLocked removes the first item.
func (l *line) popLocked() {
	l.queue[0] = item{}
	l.queue = l.queue[1:]
	if len(l.queue) == 0 {
		l.queue = l.queue[:0:0] // let the backing array go instead of creeping along it
	}
}

// takeDueLocked appends the items due by now to dst and removes them.
func (l *line) takeDueLocked(now clock.Time, dst []item) []item {
	for {
		it, ok := l.peekDueLocked(now)
		if !ok {
			return dst
		}
		dst = append(dst, *it)
		l.popLocked()
	}
}

// nextEventLocked returns when something next becomes due: the first
// queued item or the first held packet's timeout.
func (l *line) nextEventLocked() (clock.Time, bool) {
	var at clock.Time
	ok := false
	if len(l.queue) > 0 {
		at, ok = l.queue[0].due, true
	}
	for _, h := range l.held {
		if !ok || h.deadline < at {
			at, ok = h.deadline, true
		}
	}
	return at, ok
}

// pendingLocked counts the copies held or queued.
func (l *line) pendingLocked() int {
	n := len(l.queue)
	for _, h := range l.held {
		n += h.copies
	}
	return n
}

// discardAllLocked drops everything held or queued, counting it.
func (l *line) discardAllLocked() {
	l.stats.Discarded += uint64(l.pendingLocked())
	clear(l.queue)
	l.queue = nil
	clear(l.held)
	l.held = nil
}

func (l *line) snapshot() DirStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Pending = uint64(l.pendingLocked())
	return s
}

// clone copies the packet buf[off:] into a new buffer with off bytes of
// (zeroed) headroom, so that it can be written with the same offset.
func clone(buf []byte, off int) []byte {
	c := make([]byte, len(buf))
	copy(c[off:], buf[off:])
	return c
}
