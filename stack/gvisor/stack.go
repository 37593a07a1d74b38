// Package gvisor puts gVisor's userspace network stack (netstack) behind the
// stack.Stack contract. The stack has one NIC in promiscuous mode with
// spoofing enabled and default routes for IPv4 and IPv6, so it terminates
// TCP and UDP flows to any destination address, as a tun2socks-style
// gateway needs, and answers ICMP echo requests for any address.
//
// Every gVisor type and tcpip.Error stays inside this package: Conns
// report kernel-style errors (syscall errnos, net.ErrClosed, io.EOF,
// os.ErrDeadlineExceeded).
package gvisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tungate/tungate/stack"
)

// nicID is the stack's only NIC.
const nicID tcpip.NICID = 1

// Stack is gVisor's netstack fed from a TUN. It implements stack.Stack.
type Stack struct {
	opts    Options
	log     *slog.Logger
	handler stack.Handler
	gs      *gvstack.Stack
	link    *linkEndpoint

	ctx    context.Context // handlers' context, cancelled by Close
	cancel context.CancelFunc

	// inMu is held shared by DeliverInbound while it injects packets and
	// exclusively by Close to stop injection; it guards inClosed.
	inMu     sync.RWMutex
	inClosed bool

	// mu guards closed and conns, and orders wg.Add before Close's
	// wg.Wait: nothing is added once closed is set.
	mu     sync.Mutex
	closed bool
	conns  map[terminator]struct{} // live Conns, terminated by Close
	wg     sync.WaitGroup          // handler goroutines

	closeOnce sync.Once

	packetsIn      atomic.Uint64
	malformed      atomic.Uint64
	tcpFlows       atomic.Uint64
	tcpAccepted    atomic.Uint64
	tcpRejected    atomic.Uint64
	tcpAcceptFail  atomic.Uint64
	udpFlows       atomic.Uint64
	udpRefused     atomic.Uint64
	udpUnreachable atomic.Uint64
	echoReplies    atomic.Uint64
}

var _ stack.Stack = (*Stack)(nil)

// terminator is a live Conn that Close must end.
type terminator interface{ terminate() }

func (c *tcpConn) terminate() { _ = c.Abort() }
func (c *udpConn) terminate() { _ = c.Close() }

// New builds the stack. Packets it emits go to w, one IP packet per buffer
// behind stack.Headroom bytes, from gVisor's goroutines or from the caller
// of DeliverInbound; w must be safe for concurrent use. New flows go to h.
func New(w stack.PacketWriter, h stack.Handler, opts Options) (*Stack, error) {
	if w == nil || h == nil {
		return nil, errors.New("gvisor: new: nil PacketWriter or Handler")
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("gvisor: new: invalid options: %w", err)
	}
	s := &Stack{
		opts:    opts,
		log:     opts.Logger,
		handler: h,
		conns:   make(map[terminator]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.link = newLinkEndpoint(w, opts.MTU, func(err error) {
		s.log.Debug("gvisor: packet write failed", "err", err)
	})
	s.gs = gvstack.New(gvstack.Options{
		NetworkProtocols: []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{
			tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
	})
	if err := s.configure(); err != nil {
		s.cancel()
		s.gs.Destroy()
		return nil, fmt.Errorf("gvisor: new: %w", err)
	}
	return s, nil
}

// configure applies the options, creates the NIC and installs the flow
// handlers.
func (s *Stack) configure() error {
	if err := s.setTCPOptions(); err != nil {
		return err
	}
	if terr := s.gs.CreateNICWithOptions(nicID, s.link, gvstack.NICOptions{Name: "tun"}); terr != nil {
		return fmt.Errorf("create nic: %s", terr)
	}
	// Promiscuous: accept packets for any destination address.
	// Spoofing: answer from that address although it is not assigned.
	if terr := s.gs.SetPromiscuousMode(nicID, true); terr != nil {
		return fmt.Errorf("promiscuous mode: %s", terr)
	}
	if terr := s.gs.SetSpoofing(nicID, true); terr != nil {
		return fmt.Errorf("spoofing: %s", terr)
	}
	s.gs.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	rcvInit, _ := s.opts.receiveBufferRange()
	tcpFwd := tcp.NewForwarder(s.gs, rcvInit, s.opts.MaxInFlightSYN, s.onTCPRequest)
	s.gs.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(s.gs, s.onUDPRequest)
	s.gs.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
	s.gs.SetTransportProtocolHandler(icmp.ProtocolNumber4, s.onICMPv4)
	s.gs.SetTransportProtocolHandler(icmp.ProtocolNumber6, s.onICMPv6)
	return nil
}

// setTCPOptions applies the TCP tuning knobs of Options.
func (s *Stack) setTCPOptions() error {
	rcvInit, rcvMax := s.opts.receiveBufferRange()
	sack := tcpip.TCPSACKEnabled(s.opts.SACK)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: minBufferSize, Default: rcvInit, Max: rcvMax}
	snd := tcpip.TCPSendBufferSizeRangeOption{
		Min: minBufferSize, Default: s.opts.SendBufferSize, Max: s.opts.SendBufferSize,
	}
	moderate := tcpip.TCPModerateReceiveBufferOption(s.opts.ModerateReceiveBuffer)
	cc := tcpip.CongestionControlOption(s.opts.CongestionControl)
	for _, o := range []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"sack", &sack},
		{"receive buffer", &rcv},
		{"send buffer", &snd},
		{"moderate receive buffer", &moderate},
		{"congestion control", &cc},
	} {
		if terr := s.gs.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); terr != nil {
			return fmt.Errorf("tcp option %s: %s", o.name, terr)
		}
	}
	return nil
}

// DeliverInbound injects IP packets read from the TUN. Each packet is
// copied into gVisor's memory, so the caller may reuse pkts at once.
// Packets that are not IPv4 or IPv6, or shorter than their fixed header,
// are dropped and counted in Stats.Malformed. Handshakes, UDP flows and
// echo replies may be processed on the calling goroutine, including calls
// to the PacketWriter. The only error is net.ErrClosed after Close.
func (s *Stack) DeliverInbound(pkts [][]byte) error {
	s.inMu.RLock()
	defer s.inMu.RUnlock()
	if s.inClosed {
		return fmt.Errorf("gvisor: deliver: %w", net.ErrClosed)
	}
	for _, p := range pkts {
		proto, ok := networkProtocol(p)
		if !ok {
			s.malformed.Add(1)
			continue
		}
		pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		if s.link.deliver(proto, pkt) {
			s.packetsIn.Add(1)
		}
		pkt.DecRef()
	}
	return nil
}

// networkProtocol classifies p by its version nibble and checks that the
// fixed header is present; gVisor validates the rest.
func networkProtocol(p []byte) (tcpip.NetworkProtocolNumber, bool) {
	if len(p) == 0 {
		return 0, false
	}
	switch p[0] >> 4 {
	case 4:
		return header.IPv4ProtocolNumber, len(p) >= header.IPv4MinimumSize
	case 6:
		return header.IPv6ProtocolNumber, len(p) >= header.IPv6MinimumSize
	}
	return 0, false
}

// Close stops injection, cancels the handlers' context, aborts every live
// Conn (RST to the app) and closes every PacketConn, waits for the handler
// goroutines to return, then closes gVisor (aborting half-open and closing
// connections) and waits for its goroutines. No PacketWriter call happens
// after Close returns. Handlers must return once their context is done
// and their Conns fail, or Close blocks. Close is idempotent and returns
// nil.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.inMu.Lock()
		s.inClosed = true
		s.inMu.Unlock()

		s.mu.Lock()
		s.closed = true
		live := make([]terminator, 0, len(s.conns))
		for c := range s.conns {
			live = append(live, c)
		}
		s.mu.Unlock()

		s.cancel()
		for _, c := range live {
			c.terminate()
		}
		s.wg.Wait()
		s.gs.Close()
		s.gs.Wait()
	})
	return nil
}

// isClosed reports whether Close has begun.
func (s *Stack) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// adopt counts a handler goroutine in wg unless the stack is closing.
func (s *Stack) adopt() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// register tracks a live Conn so that Close can end it; it fails once the
// stack is closing.
func (s *Stack) register(c terminator) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Stack) unregister(c terminator) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// Stats is a snapshot of the stack's counters.
type Stats struct {
	PacketsIn       uint64 // inbound packets injected into gVisor
	PacketsOut      uint64 // packets written to the PacketWriter
	Malformed       uint64 // inbound packets dropped as malformed or with a bad checksum, by the adapter or gVisor
	WriteErrors     uint64 // outbound packets the PacketWriter failed to write
	TCPFlows        uint64 // TCP connection attempts handed to the handler
	TCPAccepted     uint64 // attempts whose handshake completed on Accept
	TCPAcceptFailed uint64 // Accepts that failed (app gave up, ctx done, stack closed)
	TCPRejected     uint64 // attempts rejected
	TCPSYNDropped   uint64 // SYNs dropped because MaxInFlightSYN attempts were pending
	UDPFlows        uint64 // UDP flows handed to the handler
	UDPRefused      uint64 // UDP flows refused with an ICMP port unreachable
	UDPUnreachable  uint64 // ICMP port unreachables sent for an upstream's
	ICMPEchoReplies uint64 // echo replies sent
	ActiveConns     uint64 // Conns and PacketConns not yet closed
	// States counts the live TCP Conns by state ("ESTABLISHED").
	States map[string]int
	// gVisor's own TCP counters.
	Retransmits, FastRetransmits, RTOs uint64
	RSTsSent, RSTsReceived             uint64
	CookiesSent, CookiesValid          uint64
}

// Stats returns the current counters.
func (s *Stack) Stats() Stats {
	gs := s.gs.Stats()
	s.mu.Lock()
	active := uint64(len(s.conns))
	var tcps []*tcpConn
	for c := range s.conns {
		if tc, ok := c.(*tcpConn); ok {
			tcps = append(tcps, tc)
		}
	}
	s.mu.Unlock()
	states := make(map[string]int)
	for _, c := range tcps {
		states[c.State()]++
	}
	return Stats{
		States:          states,
		Retransmits:     gs.TCP.Retransmits.Value(),
		FastRetransmits: gs.TCP.FastRetransmit.Value(),
		RTOs:            gs.TCP.Timeouts.Value(),
		RSTsSent:        gs.TCP.ResetsSent.Value(),
		RSTsReceived:    gs.TCP.ResetsReceived.Value(),
		CookiesSent:     gs.TCP.ListenOverflowSynCookieSent.Value(),
		CookiesValid:    gs.TCP.ListenOverflowSynCookieRcvd.Value(),
		PacketsIn:       s.packetsIn.Load(),
		PacketsOut:      s.link.packetsOut.Load(),
		Malformed: s.malformed.Load() + gs.IP.MalformedPacketsReceived.Value() +
			gs.NICs.MalformedL4RcvdPackets.Value() + gs.TCP.ChecksumErrors.Value() +
			gs.UDP.ChecksumErrors.Value() + gs.ICMP.V4.PacketsReceived.Invalid.Value() +
			gs.ICMP.V6.PacketsReceived.Invalid.Value(),
		WriteErrors:     s.link.writeErrors.Load(),
		TCPFlows:        s.tcpFlows.Load(),
		TCPAccepted:     s.tcpAccepted.Load(),
		TCPAcceptFailed: s.tcpAcceptFail.Load(),
		TCPRejected:     s.tcpRejected.Load(),
		TCPSYNDropped:   gs.TCP.ForwardMaxInFlightDrop.Value(),
		UDPFlows:        s.udpFlows.Load(),
		UDPRefused:      s.udpRefused.Load(),
		UDPUnreachable:  s.udpUnreachable.Load(),
		ICMPEchoReplies: s.echoReplies.Load(),
		ActiveConns:     active,
	}
}
