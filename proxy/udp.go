package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/tungate/tungate/stack"
)

var errUDPIdleTimeout = &timeoutError{msg: "proxy: udp idle timeout"}

// HandleUDP implements stack.Handler. It routes the flow and relays its
// datagrams until its session ends: with NATFullCone, a flow whose
// outbound is a PacketDialer joins the full-cone session of its app
// socket and outbound (see coneSession); any other flow gets a symmetric
// session, a socket dialed to conn.ID().Dst for it alone, which ends
// after UDPIdleTimeout without datagrams either way. The flow is dropped
// (conn closed, nothing relayed) when UDP is disabled, the policy refuses
// it or the dial fails; a reject route, or an outbound that carries no
// UDP, answers with an ICMP port unreachable where the stack can send
// one (stack.Refuser). conn is closed before HandleUDP returns.
func (p *Proxy) HandleUDP(ctx context.Context, conn stack.PacketConn) {
	defer conn.Close()
	id := conn.ID()
	ctx, end, ok := p.begin(ctx)
	if !ok {
		p.stats.udpDropped.Add(1)
		return
	}
	defer end()
	rt, err := p.routeUDP(id)
	if err == nil && p.limits().udpNAT == NATFullCone {
		pd, isPD := rt.Dialer.(PacketDialer)
		dw, isDW := conn.(stack.DatagramWriter)
		if isPD && isDW {
			p.serveCone(ctx, conn, dw, rt, pd)
			return
		}
	}
	var up net.Conn
	if err == nil {
		up, err = p.dialUDP(ctx, id, rt)
	}
	if err != nil {
		p.stats.udpDropped.Add(1)
		p.warnFD(err)
		var rej *rejectedError
		if r, ok := conn.(stack.Refuser); ok && errors.As(err, &rej) {
			// A host with nothing on the port answers so; the app's
			// connected socket fails with ECONNREFUSED at once.
			if rerr := r.Refuse(); rerr != nil {
				p.log.Debug("udp refuse", "flow", id, "err", rerr)
			}
			p.stats.udpRefused.Add(1)
		}
		p.log.Debug("udp dropped", "flow", id, "err", err)
		return
	}
	p.stats.udpSessions.Add(1)
	p.stats.udpFlows.Add(1)
	p.stats.udpActive.Add(1)
	defer p.stats.udpActive.Add(-1)
	s := &udpSession{p: p, id: id, app: conn, up: up}
	s.dw, _ = conn.(stack.DatagramWriter)
	s.e = p.newEntry(0, "udp", id, rt, nil, func() { s.interrupt(s.closeBoth) })
	p.conns.add(s.e)
	defer p.conns.remove(s.e)
	s.run(ctx)
}

// routeUDP is the Route of a UDP flow, or the error that drops it: a
// *rejectedError when the flow is to be refused.
func (p *Proxy) routeUDP(id stack.FlowID) (Route, error) {
	if p.udpDialer == nil && p.router == nil {
		return Route{}, errors.New("proxy: udp disabled")
	}
	if p.policy != nil {
		if err := p.policy(id); err != nil {
			return Route{}, fmt.Errorf("proxy: policy: %w", err)
		}
	}
	rt := p.route(id, "udp")
	switch {
	case rt.Action == ActionReject:
		return rt, &rejectedError{rt: rt}
	case rt.Action == ActionDial && rt.Dialer == nil:
		// The outbound carries no UDP (an HTTP proxy, a SOCKS5 proxy
		// without udp): refused, not sent another way.
		return rt, &rejectedError{rt: rt, why: "carries no udp"}
	case rt.Action != ActionDial:
		return rt, fmt.Errorf("proxy: %v: drop", rt)
	}
	return rt, nil
}

// dialUDP dials the symmetric session's upstream socket for id.
func (p *Proxy) dialUDP(ctx context.Context, id stack.FlowID, rt Route) (net.Conn, error) {
	limit := p.connectTimeoutOf(rt)
	timeout := timeoutAfter("udp dial timeout", limit)
	dctx, release := p.withTimeout(ctx, limit, timeout)
	defer release()
	up, err := rt.Dialer.DialContext(dctx, "udp", rt.target(id))
	if err != nil {
		return nil, fmt.Errorf("proxy: dial udp %s via %s: %w", rt.target(id), rt.Outbound, err)
	}
	return up, nil
}

// udpSession relays the datagrams of one UDP flow: a symmetric session.
type udpSession struct {
	p     *Proxy
	id    stack.FlowID
	app   stack.PacketConn
	dw    stack.DatagramWriter // app's, nil when the stack has none
	up    net.Conn
	wd    *watchdog
	entry udpEntry
	e     *connEntry // listed in p.conns

	// mu serialises the asynchronous interrupts (timeout, cancellation)
	// with the end of the session.
	mu    sync.Mutex
	ended bool // guarded by mu
}

func (s *udpSession) run(ctx context.Context) {
	s.wd = newWatchdog(s.p.clock, s.p.limits().udpIdleTimeout, errUDPIdleTimeout, func(error) {
		s.interrupt(s.closeBoth)
	})
	stopCancel := context.AfterFunc(ctx, func() { s.interrupt(s.closeBoth) })
	s.entry.evict = func() { s.interrupt(s.closeBoth) }
	s.p.evict(s.p.udp.add(&s.entry))
	defer s.p.udp.remove(&s.entry)
	var wg sync.WaitGroup
	wg.Go(s.downstream)
	s.upstream()
	s.closeBoth() // ends the other direction
	wg.Wait()

	s.wd.stop()
	stopCancel()
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
}

// upstream relays app→upstream until either side fails or is closed.
func (s *udpSession) upstream() {
	bp := s.p.udpBufs.get()
	defer s.p.udpBufs.put(bp)
	buf := *bp
	for {
		n, err := s.app.Read(buf)
		if err != nil {
			return
		}
		s.touch()
		_, err = s.up.Write(buf[:n])
		if s.portUnreachable(err) {
			// The error was pending from an earlier datagram and kept
			// this one from being sent; it is cleared now.
			_, err = s.up.Write(buf[:n])
		}
		if err != nil && !s.portUnreachable(err) {
			return
		}
		s.p.stats.udpPacketsUp.Add(1)
		s.p.stats.udpBytesUp.Add(uint64(n))
		s.e.up.Add(uint64(n))
	}
}

// downstream relays upstream→app until either side fails or is closed.
func (s *udpSession) downstream() {
	defer s.closeBoth() // ends the other direction
	bp := s.p.udpBufs.get()
	defer s.p.udpBufs.put(bp)
	buf := *bp
	for {
		n, err := s.up.Read(buf)
		if s.portUnreachable(err) {
			continue
		}
		if err != nil {
			return
		}
		s.touch()
		if _, err := s.app.Write(buf[:n]); err != nil {
			return
		}
		s.p.stats.udpPacketsDown.Add(1)
		s.p.stats.udpBytesDown.Add(uint64(n))
		s.e.down.Add(uint64(n))
	}
}

func (s *udpSession) touch() {
	s.wd.touch()
	s.p.udp.touch(&s.entry)
}

// portUnreachable reports and counts the error a connected UDP socket
// returns once after an ICMP port unreachable, and passes it on to the app
// as an ICMP port unreachable of its own (its connected socket fails with
// ECONNREFUSED, as it would without the gateway). The destination may come
// back (a DNS server restarting), so the session goes on; the idle timeout
// ends it otherwise.
func (s *udpSession) portUnreachable(err error) bool {
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	s.p.stats.udpPortUnreachable.Add(1)
	if s.dw != nil {
		if err := s.dw.PortUnreachable(s.id.Dst, nil); err == nil {
			s.p.stats.udpUnreachableToApp.Add(1)
		}
	}
	return true
}

func (s *udpSession) closeBoth() {
	s.app.Close()
	s.up.Close()
}

// interrupt runs f unless the session has ended.
func (s *udpSession) interrupt(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		f()
	}
}

// rejectedError is a UDP flow its Route rejects, or whose outbound
// carries no UDP (why).
type rejectedError struct {
	rt  Route
	why string
}

func (e *rejectedError) Error() string {
	if e.why != "" {
		return fmt.Sprintf("proxy: %v: %s", e.rt, e.why)
	}
	return fmt.Sprintf("proxy: %v: reject", e.rt)
}
