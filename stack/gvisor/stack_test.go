package gvisor

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/tungate/tungate/stack"
)

// recorder is a PacketWriter that keeps what the stack emits and reports
// each packet on a channel (dropping notifications nobody waits for).
type recorder struct {
	mu   sync.Mutex // guards pkts
	pkts [][]byte
	out  chan []byte
}

func newRecorder() *recorder { return &recorder{out: make(chan []byte, 64)} }

func (r *recorder) WritePackets(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		r.mu.Lock()
		r.pkts = append(r.pkts, p)
		r.mu.Unlock()
		select {
		case r.out <- p:
		default:
		}
	}
	return len(bufs), nil
}

// next returns the next emitted packet accepted by keep.
func (r *recorder) next(t *testing.T, keep func([]byte) bool) []byte {
	t.Helper()
	ctx := testContext(t)
	for {
		select {
		case p := <-r.out:
			if keep(p) {
				return p
			}
		case <-ctx.Done():
			t.Fatal("no matching packet emitted")
			return nil
		}
	}
}

// newRawStack returns a Stack whose output is only recorded: tests inject
// hand-built packets and inspect the answers.
func newRawStack(t *testing.T, h stack.Handler, opts Options) (*Stack, *recorder) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	rec := newRecorder()
	s, err := New(rec, h, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, rec
}

// rawSYN builds an IPv4 TCP SYN.
func rawSYN(src, dst netip.AddrPort) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	s, d := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: s, DstAddr: d,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1000,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535,
	})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, s, d, header.TCPMinimumSize)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

func isSynAck(p []byte) bool {
	seg, ok := parseTCP(p)
	return ok && seg.flags.Contains(header.TCPFlagSyn|header.TCPFlagAck)
}

func deliver(t *testing.T, s *Stack, pkts ...[]byte) {
	t.Helper()
	if err := s.DeliverInbound(pkts); err != nil {
		t.Fatalf("DeliverInbound: %v", err)
	}
}

var (
	appPort   = netip.AddrPortFrom(clientV4, 40000)
	appPort2  = netip.AddrPortFrom(clientV4, 40001)
	serverWeb = netip.AddrPortFrom(serverV4, 80)
)

func TestAccept_ContextCancelAbortsPendingHandshake(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	result := make(chan error, 1)
	s, rec := newRawStack(t, handlerFuncs{tcp: func(_ context.Context, req stack.Request) {
		_, err := req.Accept(ctx)
		result <- err
	}}, DefaultOptions())
	deliver(t, s, rawSYN(appPort, serverWeb))
	rec.next(t, isSynAck) // the handshake is pending: the app never ACKs
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Fatalf("Accept = %v, want context.Canceled", err)
	}
	if st := s.Stats(); st.TCPAcceptFailed != 1 || st.ActiveConns != 0 {
		t.Errorf("stats = %+v, want 1 failed accept, 0 active", st)
	}
}

func TestClose_UnblocksPendingAccept(t *testing.T) {
	result := make(chan error, 1)
	s, rec := newRawStack(t, handlerFuncs{tcp: func(_ context.Context, req stack.Request) {
		_, err := req.Accept(context.Background())
		result <- err
	}}, DefaultOptions())
	deliver(t, s, rawSYN(appPort, serverWeb))
	rec.next(t, isSynAck)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-result; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept = %v, want net.ErrClosed", err)
	}
}

func TestForwarder_AbsorbsRepeatedSYNAndDropsBeyondMaxInFlight(t *testing.T) {
	pending := make(chan stack.Request, 4)
	release := make(chan struct{})
	opts := DefaultOptions()
	opts.MaxInFlightSYN = 1
	s, _ := newRawStack(t, handlerFuncs{tcp: func(_ context.Context, req stack.Request) {
		pending <- req
		<-release
		req.Reject(false)
	}}, opts)
	deliver(t, s, rawSYN(appPort, serverWeb))
	req := <-pending
	deliver(t, s, rawSYN(appPort, serverWeb))  // retransmission: absorbed
	deliver(t, s, rawSYN(appPort2, serverWeb)) // second flow: over the limit
	st := s.Stats()
	close(release)
	if req.ID().Src != appPort || req.ID().Dst != serverWeb {
		t.Errorf("ID = %v", req.ID())
	}
	if st.TCPFlows != 1 || st.TCPSYNDropped != 1 {
		t.Errorf("stats = %+v, want 1 flow and 1 dropped SYN", st)
	}
}

func TestClose_AbortsLiveConnsAndCancelsHandlers(t *testing.T) {
	handlerErr := make(chan error, 1)
	accepted := make(chan struct{})
	h := newHarness(t, handlerFuncs{tcp: func(ctx context.Context, req stack.Request) {
		c, err := req.Accept(ctx)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		close(accepted)
		_, err = c.Read(make([]byte, 1))
		<-ctx.Done()
		handlerErr <- err
	}}, DefaultOptions())
	cc, err := h.dial(testContext(t), netip.AddrPortFrom(serverV4, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	<-accepted
	if err := h.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-handlerErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("handler Read = %v, want net.ErrClosed", err)
	}
	if terr := cc.readErr(testContext(t)); !isClientErr[*tcpip.ErrConnectionReset](clientErr{terr}) {
		t.Errorf("client read = %v, want reset", terr)
	}
	if err := h.srv.DeliverInbound([][]byte{rawSYN(appPort, serverWeb)}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DeliverInbound after Close = %v, want net.ErrClosed", err)
	}
	if err := h.srv.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestDeliverInbound_DropsAndCountsMalformed(t *testing.T) {
	s, _ := newRawStack(t, handlerFuncs{}, DefaultOptions())
	badVersion := rawSYN(appPort, serverWeb)
	badVersion[0] = 0x55
	deliver(t, s,
		nil,
		badVersion,
		rawSYN(appPort, serverWeb)[:12], // truncated IPv4 header
		make([]byte, 20),                // version 0
		[]byte{0x60, 0, 0, 0},           // truncated IPv6 header
	)
	if st := s.Stats(); st.Malformed != 5 || st.PacketsIn != 0 {
		t.Errorf("stats = %+v, want 5 malformed, 0 in", st)
	}
	deliver(t, s, rawSYN(appPort, serverWeb))
	if st := s.Stats(); st.PacketsIn != 1 {
		t.Errorf("PacketsIn = %d, want 1", st.PacketsIn)
	}
}

func TestNew_RejectsInvalidOptions(t *testing.T) {
	opts := DefaultOptions()
	opts.MTU = 576
	opts.ReceiveBufferSize = 100
	opts.SendBufferSize = -1
	opts.CongestionControl = "bbr"
	opts.MaxInFlightSYN = -1
	_, err := New(newRecorder(), handlerFuncs{}, opts)
	if err == nil {
		t.Fatal("New accepted invalid options")
	}
	for _, want := range []string{"mtu 576", "receive buffer", "send buffer", `"bbr"`, "in-flight"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := New(nil, handlerFuncs{}, DefaultOptions()); err == nil {
		t.Error("New accepted a nil PacketWriter")
	}
	goleak.VerifyNone(t)
}

func TestNew_ZeroOptionsTakeDefaults(t *testing.T) {
	s, _ := newRawStack(t, handlerFuncs{}, Options{})
	want := DefaultOptions()
	want.SACK, want.ModerateReceiveBuffer = false, false
	want.Logger = s.opts.Logger
	if s.opts != want {
		t.Errorf("opts = %+v, want %+v", s.opts, want)
	}
}

func TestTranslate_KeepsErrnosComparable(t *testing.T) {
	for _, tc := range []struct {
		terr tcpip.Error
		want error
	}{
		{&tcpip.ErrConnectionReset{}, syscall.ECONNRESET},
		{&tcpip.ErrConnectionRefused{}, syscall.ECONNREFUSED},
		{&tcpip.ErrTimeout{}, syscall.ETIMEDOUT},
		{&tcpip.ErrClosedForReceive{}, net.ErrClosed},
		{&tcpip.ErrAborted{}, syscall.ECONNABORTED},
	} {
		if got := translate(tc.terr); !errors.Is(got, tc.want) {
			t.Errorf("translate(%s) = %v, want %v", tc.terr, got, tc.want)
		}
	}
	if got := translate(&tcpip.ErrBadAddress{}); got == nil || !strings.HasPrefix(got.Error(), "gvisor: ") {
		t.Errorf("translate(bad address) = %v", got)
	}
}
