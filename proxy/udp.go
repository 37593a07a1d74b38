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

// HandleUDP implements stack.Handler. It dials a UDP socket to
// conn.ID().Dst with UDPDialer and relays datagrams both ways until
// neither direction carried one for UDPIdleTimeout, ctx is done or the
// proxy closes. The flow is dropped (conn closed, nothing relayed) when
// UDP is disabled, the policy refuses it or the dial fails. conn is
// closed before HandleUDP returns.
func (p *Proxy) HandleUDP(ctx context.Context, conn stack.PacketConn) {
	defer conn.Close()
	id := conn.ID()
	ctx, end, ok := p.begin(ctx)
	if !ok {
		p.stats.udpDropped.Add(1)
		return
	}
	defer end()
	up, err := p.dialUDP(ctx, id)
	if err != nil {
		p.stats.udpDropped.Add(1)
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
	p.stats.udpActive.Add(1)
	defer p.stats.udpActive.Add(-1)
	s := &udpSession{p: p, id: id, app: conn, up: up}
	s.run(ctx)
}

func (p *Proxy) dialUDP(ctx context.Context, id stack.FlowID) (net.Conn, error) {
	if p.udpDialer == nil && p.router == nil {
		return nil, errors.New("proxy: udp disabled")
	}
	if p.policy != nil {
		if err := p.policy(id); err != nil {
			return nil, fmt.Errorf("proxy: policy: %w", err)
		}
	}
	rt := p.route(id, "udp")
	switch {
	case rt.Action == ActionReject:
		return nil, &rejectedError{rt}
	case rt.Action != ActionDial || rt.Dialer == nil:
		return nil, fmt.Errorf("proxy: %v: %s", rt, map[Action]string{ActionDial: "no udp", ActionDrop: "drop"}[rt.Action])
	}
	limit := p.connectTimeoutOf(rt)
	timeout := &timeoutError{msg: fmt.Sprintf("udp dial timeout after %v", limit)}
	dctx, release := p.withTimeout(ctx, limit, timeout)
	defer release()
	up, err := rt.Dialer.DialContext(dctx, "udp", rt.target(id))
	if err != nil {
		return nil, fmt.Errorf("proxy: dial udp %s via %s: %w", rt.target(id), rt.Outbound, err)
	}
	return up, nil
}

// udpSession relays the datagrams of one UDP flow.
type udpSession struct {
	p   *Proxy
	id  stack.FlowID
	app stack.PacketConn
	up  net.Conn
	wd  *watchdog

	// mu serialises the asynchronous interrupts (timeout, cancellation)
	// with the end of the session.
	mu    sync.Mutex
	ended bool // guarded by mu
}

func (s *udpSession) run(ctx context.Context) {
	s.wd = newWatchdog(s.p.clock, s.p.udpIdleTimeout, errUDPIdleTimeout, func(error) {
		s.interrupt(s.closeBoth)
	})
	stopCancel := context.AfterFunc(ctx, func() { s.interrupt(s.closeBoth) })
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
		s.wd.touch()
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
		s.wd.touch()
		if _, err := s.app.Write(buf[:n]); err != nil {
			return
		}
		s.p.stats.udpPacketsDown.Add(1)
		s.p.stats.udpBytesDown.Add(uint64(n))
	}
}

// portUnreachable reports and counts the error a connected UDP socket
// returns once after an ICMP port unreachable. The destination may come
// back (a DNS server restarting), so the session goes on; the idle
// timeout ends it otherwise.
func (s *udpSession) portUnreachable(err error) bool {
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	s.p.stats.udpPortUnreachable.Add(1)
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

// rejectedError is a UDP flow its Route rejects.
type rejectedError struct{ rt Route }

func (e *rejectedError) Error() string { return fmt.Sprintf("proxy: %v: reject", e.rt) }
