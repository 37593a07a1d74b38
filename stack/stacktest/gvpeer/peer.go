// Package gvpeer puts an independent TCP/IP implementation, a gVisor
// network stack, in front of a stack under test as the app: in memory,
// in real time, each direction on its own goroutine so that neither
// stack re-enters the other. Tests use it to check a stack against
// someone else's TCP rather than against their own expectations.
//
// Wiring: build the Peer, give it to the stack under test as its
// PacketWriter, then Start it with the stack as the Inbound side:
//
//	p, _ := gvpeer.New(gvpeer.Options{MTU: 1500, Addrs: addrs})
//	s, _ := tcp.New(p, handler, opts)
//	p.Start(s)
//	defer p.Close() // after s.Close
package gvpeer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tungate/tungate/stack"
)

// NIC is the app stack's only interface.
const NIC tcpip.NICID = 1

// Options configure a Peer.
type Options struct {
	// MTU of the link between the app and the stack under test.
	MTU int
	// Addrs are the app's addresses (one of each family is usual).
	Addrs []netip.Addr
	// Queue is how many packets each direction buffers; 0 means 4096.
	Queue int
	// Observe, if set, sees a copy of each packet the stack under test
	// emits, before the app does. It runs on the writer's goroutine.
	Observe func(pkt []byte)
}

// Inbound is the stack under test's receiving side.
type Inbound interface {
	DeliverInbound(pkts [][]byte) error
}

// Peer is the app: a gVisor stack with SACK on, routing everything to
// the stack under test.
type Peer struct {
	// Stack is the app's network stack, for tests that open endpoints
	// of their own.
	Stack *gvstack.Stack

	ep      *channel.Endpoint
	mtu     int
	observe func([]byte)
	toApp   chan []byte
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu  sync.Mutex
	bad []string // PacketWriter contract violations
}

// New builds the app stack; nothing moves until Start.
func New(opts Options) (*Peer, error) {
	if opts.MTU <= 0 {
		return nil, fmt.Errorf("gvpeer: MTU %d", opts.MTU)
	}
	if opts.Queue == 0 {
		opts.Queue = 4096
	}
	p := &Peer{
		mtu:     opts.MTU,
		observe: opts.Observe,
		toApp:   make(chan []byte, opts.Queue),
		ep:      channel.New(opts.Queue, uint32(opts.MTU), ""),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.Stack = gvstack.New(gvstack.Options{
		NetworkProtocols:   []gvstack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []gvstack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	fail := func(what string, terr tcpip.Error) (*Peer, error) {
		p.Stack.Close()
		p.Stack.Wait()
		return nil, fmt.Errorf("gvpeer: %s: %s", what, terr)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if terr := p.Stack.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); terr != nil {
		return fail("SACK", terr)
	}
	if terr := p.Stack.CreateNIC(NIC, p.ep); terr != nil {
		return fail("NIC", terr)
	}
	for _, a := range opts.Addrs {
		pa := tcpip.ProtocolAddress{Protocol: NetProto(a), AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		if terr := p.Stack.AddProtocolAddress(NIC, pa, gvstack.AddressProperties{}); terr != nil {
			return fail("address "+a.String(), terr)
		}
	}
	p.Stack.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: NIC},
		{Destination: header.IPv6EmptySubnet, NIC: NIC},
	})
	return p, nil
}

// Start delivers the app's packets to in and the stack's to the app.
func (p *Peer) Start(in Inbound) {
	p.wg.Add(2)
	go p.appToStack(in)
	go p.stackToApp()
}

func (p *Peer) appToStack(in Inbound) {
	defer p.wg.Done()
	for {
		pkt := p.ep.ReadContext(p.ctx)
		if pkt == nil {
			return
		}
		b := append([]byte(nil), pkt.ToView().AsSlice()...)
		pkt.DecRef()
		if in.DeliverInbound([][]byte{b}) != nil {
			return
		}
	}
}

func (p *Peer) stackToApp() {
	defer p.wg.Done()
	for {
		select {
		case <-p.ctx.Done():
			return
		case b := <-p.toApp:
			var proto tcpip.NetworkProtocolNumber
			switch b[0] >> 4 {
			case 4:
				proto = header.IPv4ProtocolNumber
			case 6:
				proto = header.IPv6ProtocolNumber
			default:
				p.violation(fmt.Sprintf("packet of IP version %d", b[0]>>4))
				continue
			}
			pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
			p.ep.InjectInbound(proto, pkt)
			pkt.DecRef()
		}
	}
}

// WritePackets is the stack under test's PacketWriter. It checks the
// contract of package stack (headroom, MTU, a packet at all), shows each
// packet to Observe and queues it for the app.
func (p *Peer) WritePackets(bufs [][]byte, offset int) (int, error) {
	if p.ctx.Err() != nil {
		return 0, net.ErrClosed
	}
	if offset < stack.Headroom {
		p.violation(fmt.Sprintf("offset %d < headroom %d", offset, stack.Headroom))
	}
	for i, b := range bufs {
		pkt := append([]byte(nil), b[offset:]...)
		switch {
		case len(pkt) == 0:
			p.violation("empty packet")
			continue
		case len(pkt) > p.mtu:
			p.violation(fmt.Sprintf("packet of %d bytes exceeds mtu %d", len(pkt), p.mtu))
		}
		if p.observe != nil {
			p.observe(pkt)
		}
		select {
		case p.toApp <- pkt:
		case <-p.ctx.Done():
			return i, net.ErrClosed
		}
	}
	return len(bufs), nil
}

func (p *Peer) violation(s string) {
	p.mu.Lock()
	p.bad = append(p.bad, s)
	p.mu.Unlock()
}

// Violations returns the PacketWriter contract violations seen so far.
func (p *Peer) Violations() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.bad...)
}

// DialTCP connects the app to dst.
func (p *Peer) DialTCP(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	c, err := p.Dial(ctx, dst)
	if err != nil {
		return nil, err
	}
	return c.TCPConn, nil
}

// AppConn is one of the app's TCP connections.
type AppConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
}

// Abort resets the connection: the app sends a RST and forgets it, as a
// kernel socket closed with SO_LINGER 0 does.
func (c *AppConn) Abort() { c.ep.Abort() }

// Dial connects the app to dst, keeping the endpoint so that the test
// can Abort. It is gonet.DialContextTCP with the endpoint kept.
func (p *Peer) Dial(ctx context.Context, dst netip.AddrPort) (*AppConn, error) {
	var wq waiter.Queue
	ep, terr := p.Stack.NewEndpoint(tcp.ProtocolNumber, NetProto(dst.Addr()), &wq)
	if terr != nil {
		return nil, fmt.Errorf("gvpeer: endpoint: %s", terr)
	}
	entry, writable := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	terr = ep.Connect(FullAddress(dst))
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-writable:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(dst), Err: errors.New(terr.String())}
	}
	return &AppConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep}, nil
}

// Close stops the goroutines and the app stack. Close the stack under
// test first: until Close the app keeps draining what it writes, and
// from Close on WritePackets fails with net.ErrClosed.
func (p *Peer) Close() {
	p.cancel()
	p.wg.Wait()
	p.Stack.Close()
	p.Stack.Wait()
	p.ep.Close()
}

// NetProto is the network protocol of a.
func NetProto(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return header.IPv4ProtocolNumber
	}
	return header.IPv6ProtocolNumber
}

// FullAddress is dst on the app's NIC.
func FullAddress(dst netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: NIC, Addr: tcpip.AddrFromSlice(dst.Addr().AsSlice()), Port: dst.Port()}
}
