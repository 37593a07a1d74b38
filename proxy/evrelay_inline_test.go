package proxy

import (
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// gatedSource is an endpoint with size bytes to read; reads past the
// first limit bytes wait for open (or a second, so that a test without
// the limit fails instead of hanging). It takes nothing written to it.
type gatedSource struct {
	size, limit int64
	read        atomic.Int64
	open        chan struct{}
}

func (s *gatedSource) tryRead(p []byte) (int, error) {
	left := s.size - s.read.Load()
	if left <= 0 {
		return 0, syscall.EAGAIN
	}
	if s.read.Load() >= s.limit {
		select {
		case <-s.open:
		case <-time.After(time.Second):
		}
	}
	n := int(min(int64(len(p)), left))
	s.read.Add(int64(n))
	return n, nil
}
func (s *gatedSource) tryWrite([]byte, bool) (int, error) { return 0, syscall.EAGAIN }
func (s *gatedSource) watch(*evRelay) error               { return nil }
func (s *gatedSource) unwatch(*evRelay)                   {}
func (s *gatedSource) conn() net.Conn                     { return nil }

// countingSink takes everything written and has nothing to read.
type countingSink struct{ written atomic.Int64 }

func (s *countingSink) tryRead([]byte) (int, error) { return 0, syscall.EAGAIN }
func (s *countingSink) tryWrite(p []byte, _ bool) (int, error) {
	s.written.Add(int64(len(p)))
	return len(p), nil
}
func (s *countingSink) watch(*evRelay) error { return nil }
func (s *countingSink) unwatch(*evRelay)     {}
func (s *countingSink) conn() net.Conn       { return nil }

// A relay run inline (by the poller or the TUN reader) moves about its
// budget there and hands the rest to a goroutine of its own, so that a
// bulk transfer does not hold up the caller's other flows.
func TestEvRelay_InlineRunHandsOffAfterItsBudget(t *testing.T) {
	const size = 1 << 20
	p := New(Options{})
	defer p.Close()
	src := &gatedSource{size: size, limit: inlineBudget, open: make(chan struct{})}
	sink := &countingSink{}
	r := &evRelay{p: p, ends: [2]endpoint{SideApp: sink, SideUpstream: src}, budget: -1, e: &connEntry{}}
	r.wd = newWatchdog(clock.Real(), time.Hour, errIdleTimeout, func(error) {})
	defer r.wd.stop()

	r.notifyInline()
	if got := sink.written.Load(); got < inlineBudget || got >= inlineBudget+tcpBufSize {
		t.Errorf("the inline run moved %d bytes, want its budget of %d (one buffer more at most)", got, inlineBudget)
	}
	close(src.open)
	deadline := time.Now().Add(5 * time.Second)
	for (sink.written.Load() < size || r.sched.Load() != schedIdle) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := sink.written.Load(); got != size {
		t.Fatalf("%d of %d bytes moved: the relay's goroutine did not go on", got, size)
	}
	if r.budget != -1 {
		t.Errorf("an idle relay keeps a budget of %d; its next run on a goroutine would be cut short", r.budget)
	}
}
