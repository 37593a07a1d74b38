package gvisor

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// onUDPRequest runs on the delivering goroutine for a datagram that matches
// no flow yet: it creates a connected endpoint (which receives the
// datagram) and hands it to the handler on a goroutine owned by the Stack.
// It always reports the datagram handled, so gVisor never answers with
// ICMP port unreachable.
func (s *Stack) onUDPRequest(fr *udp.ForwarderRequest) bool {
	id := flowID(fr.ID())
	wq := new(waiter.Queue)
	ep, terr := fr.CreateEndpoint(wq)
	if terr != nil {
		s.log.Debug("gvisor: udp endpoint", "flow", id, "err", terr.String())
		return true
	}
	c := &udpConn{s: s}
	c.init(ep, wq, id, false, func() { s.unregister(c) })
	if !s.registerHandled(c) {
		_ = c.Close()
		return true
	}
	s.udpFlows.Add(1)
	s.log.Debug("gvisor: udp flow", "flow", id)
	go func() {
		defer s.wg.Done()
		s.handler.HandleUDP(s.ctx, c)
	}()
	return true
}

// registerHandled registers c and counts its handler goroutine in wg, both
// or neither: it fails once the stack is closing.
func (s *Stack) registerHandled(c terminator) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// portUnreachable writes the ICMP port unreachable answering a datagram of
// flow id straight to the link: gVisor's own would need the datagram to
// find no endpoint, and the flow has one.
func (s *Stack) portUnreachable(id stack.FlowID, payload []byte) error {
	return s.writeRaw(1280, func(b []byte) (int, error) { // an ICMP error fits the IPv6 minimum MTU
		return packet.BuildUDPPortUnreachable(b, id.Src, id.Dst, payload)
	})
}

// writeRaw builds one packet of at most size bytes with build and writes
// it to the link, beside gVisor.
func (s *Stack) writeRaw(size int, build func(b []byte) (int, error)) error {
	buf := make([]byte, stack.Headroom+size)
	n, err := build(buf[stack.Headroom:])
	if err != nil {
		return err
	}
	if _, terr := s.link.write([][]byte{buf[:stack.Headroom+n]}); terr != nil {
		return fmt.Errorf("gvisor: write: %s", terr)
	}
	return nil
}
