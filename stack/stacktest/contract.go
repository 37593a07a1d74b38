// Package stacktest is the contract suite of package stack: the same
// tests, at the packet level, for every Stack implementation. A stack's
// own tests call Run with a constructor.
package stacktest

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// NewStack builds the stack under test, writing to w and handing flows
// to h.
type NewStack func(w stack.PacketWriter, h stack.Handler) (stack.Stack, error)

// waitLimit bounds every wait for the stack under test.
const waitLimit = 5 * time.Second

var (
	app    = netip.MustParseAddrPort("198.18.0.1:40000")
	server = netip.MustParseAddrPort("198.19.0.2:80")
)

// Run runs the contract tests against the stacks newStack builds.
func Run(t *testing.T, newStack NewStack) {
	t.Run("AcceptAnswersTheSYNWithSYNACK", func(t *testing.T) { acceptAnswersSYN(t, newStack) })
	t.Run("RejectWithResetAnswersRST", func(t *testing.T) { rejectWithReset(t, newStack) })
	t.Run("RejectWithoutResetAnswersNothing", func(t *testing.T) { rejectSilently(t, newStack) })
	t.Run("UndecidedHandlerMeansRST", func(t *testing.T) { undecided(t, newStack) })
	t.Run("FirstDecisionWins", func(t *testing.T) { firstDecisionWins(t, newStack) })
	t.Run("RequestIDIsTheAppsFlow", func(t *testing.T) { requestID(t, newStack) })
	t.Run("Conn", func(t *testing.T) { runConn(t, newStack) })
	t.Run("UDP", func(t *testing.T) { runUDP(t, newStack) })
}

// writer records what the stack emits.
type writer struct {
	mu   sync.Mutex
	pkts [][]byte
	more chan struct{}
}

func newWriter() *writer { return &writer{more: make(chan struct{}, 1)} }

func (w *writer) WritePackets(bufs [][]byte, offset int) (int, error) {
	w.mu.Lock()
	for _, b := range bufs {
		w.pkts = append(w.pkts, append([]byte(nil), b[offset:]...))
	}
	w.mu.Unlock()
	select {
	case w.more <- struct{}{}:
	default:
	}
	return len(bufs), nil
}

// nextTCP waits for the next TCP segment the stack writes.
func (w *writer) nextTCP(t *testing.T) packet.TCP {
	t.Helper()
	return w.next(t, packet.ProtoTCP).TCP()
}

// handlerFunc adapts a function to stack.Handler; UDP flows are closed.
type handlerFunc func(context.Context, stack.Request)

func (f handlerFunc) HandleTCP(ctx context.Context, r stack.Request)  { f(ctx, r) }
func (f handlerFunc) HandleUDP(_ context.Context, c stack.PacketConn) { c.Close() }

// start builds a stack with handler h, closed when the test ends.
func start(t *testing.T, newStack NewStack, h stack.Handler) (stack.Stack, *writer) {
	t.Helper()
	w := newWriter()
	s, err := newStack(w, h)
	if err != nil {
		t.Fatalf("new stack: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, w
}

// syn delivers the app's SYN (ISN 1000) for app → server.
func syn(t *testing.T, s stack.Stack) {
	t.Helper()
	b := make([]byte, 100)
	n, err := packet.BuildTCP(b, packet.TCPHeader{Src: app, Dst: server, Seq: 1000, Flags: packet.SYN, Window: 65535,
		Options: &packet.TCPOptions{MSS: 1460, HasMSS: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeliverInbound([][]byte{b[:n]}); err != nil {
		t.Fatalf("DeliverInbound: %v", err)
	}
}

// decide runs the handler's decision f on the request of one SYN and
// returns the first segment the stack answers with.
func decide(t *testing.T, newStack NewStack, f func(context.Context, stack.Request)) packet.TCP {
	t.Helper()
	s, w := start(t, newStack, handlerFunc(f))
	syn(t, s)
	return w.nextTCP(t)
}

func acceptAnswersSYN(t *testing.T, newStack NewStack) {
	seg := decide(t, newStack, func(ctx context.Context, r stack.Request) {
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, _ = r.Accept(ctx) // the app never completes the handshake here
	})
	if seg.Flags() != packet.SYN|packet.ACK || seg.Ack() != 1001 {
		t.Fatalf("answer %v ack %d, want SYN-ACK acking the SYN", seg.Flags(), seg.Ack())
	}
}

func rejectWithReset(t *testing.T, newStack NewStack) {
	seg := decide(t, newStack, func(_ context.Context, r stack.Request) { r.Reject(true) })
	if !seg.Flags().Has(packet.RST) || seg.Ack() != 1001 {
		t.Fatalf("answer %v ack %d, want RST acking the SYN", seg.Flags(), seg.Ack())
	}
}

func rejectSilently(t *testing.T, newStack NewStack) {
	decided := make(chan struct{})
	s, w := start(t, newStack, handlerFunc(func(ctx context.Context, r stack.Request) {
		r.Reject(false)
		close(decided)
		<-ctx.Done()
	}))
	syn(t, s)
	<-decided
	// Anything the stack would answer is written by now: Reject returns
	// after its RST, if any, is out.
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, b := range w.pkts {
		if p, err := packet.ParseIP(b); err == nil && p.Proto == packet.ProtoTCP {
			t.Fatalf("Reject(false) answered with %v", p.TCP().Flags())
		}
	}
}

func undecided(t *testing.T, newStack NewStack) {
	seg := decide(t, newStack, func(context.Context, stack.Request) {})
	if !seg.Flags().Has(packet.RST) || seg.Ack() != 1001 {
		t.Fatalf("answer %v ack %d, want RST acking the SYN", seg.Flags(), seg.Ack())
	}
}

func firstDecisionWins(t *testing.T, newStack NewStack) {
	errs := make(chan error, 1)
	seg := decide(t, newStack, func(ctx context.Context, r stack.Request) {
		r.Reject(true)
		r.Reject(false) // does nothing
		_, err := r.Accept(ctx)
		errs <- err
	})
	if !seg.Flags().Has(packet.RST) {
		t.Fatalf("answer %v, want the first decision's RST", seg.Flags())
	}
	if err := <-errs; err == nil {
		t.Fatal("Accept after Reject succeeded")
	}
}

func requestID(t *testing.T, newStack NewStack) {
	ids := make(chan stack.FlowID, 1)
	decide(t, newStack, func(_ context.Context, r stack.Request) {
		ids <- r.ID()
		r.Reject(true)
	})
	if id := <-ids; id.Src != app || id.Dst != server {
		t.Fatalf("ID %v, want %v->%v", id, app, server)
	}
}
