package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/tungate/tungate/stack"
)

var (
	errUDPEvicted = errors.New("proxy: udp session evicted at the session limit")
	errUDPClosed  = errors.New("proxy: udp session ended")
)

// coneKey names a full-cone session: the app's socket, and the outbound
// its flows leave through (rules may send two destinations of one socket
// through different outbounds, each with its own mapping).
type coneKey struct {
	app      netip.AddrPort
	outbound string
}

// coneSession is one endpoint-independent mapping (RFC 4787 §4.1): one
// upstream for every flow of one app socket through one outbound. Its
// flows are the stack's PacketConns, one per destination the app sent
// to; each runs on its HandleUDP goroutine, writing upstream. One reader
// goroutine hands what the upstream receives to the flow of the remote
// it came from, or, for a remote the app never sent to, to the app from
// that remote (endpoint-independent filtering, RFC 4787 §5).
//
// The mapping lives while datagrams pass either way: the idle timer
// (Options.UDPIdleTimeout) is refreshed by outbound (RFC 4787 REQ-6) and
// inbound datagrams. It ends on that timer, at eviction, when its last
// flow goes, when its upstream fails (a SOCKS5 control connection
// closing) and when the proxy closes; then every flow of it is closed.
type coneSession struct {
	p     *Proxy
	key   coneKey
	entry udpEntry
	ready chan struct{} // closed once up or err is set
	up    PacketUpstream
	err   error
	wd    *watchdog

	mu    sync.Mutex
	flows map[netip.AddrPort]*coneFlow // by the address the app sent to
	// alias maps a remote the upstream hears from to the address the app
	// sent to, where they differ (a fake IP dialed by name).
	alias map[netip.AddrPort]netip.AddrPort
	// byName are the flows whose destination the upstream proxy resolves
	// (Destination.Addr unknown), by port, so that a reply from the
	// address the proxy resolved can find its flow.
	byName map[uint16][]*coneFlow
	ended  bool
}

// coneFlow is one flow (one destination) of a session.
type coneFlow struct {
	conn stack.PacketConn
	dw   stack.DatagramWriter
	app  netip.AddrPort // the address the app sent to: the replies' source
	dst  Destination
	e    *connEntry // listed in p.conns while attached
}

// cone returns the session of key, creating it (creator true) when there
// is none; the creator must open it.
func (p *Proxy) cone(key coneKey) (s *coneSession, creator bool) {
	t := p.udp
	t.mu.Lock()
	if s := t.cones[key]; s != nil {
		t.mu.Unlock()
		return s, false
	}
	s = &coneSession{p: p, key: key, ready: make(chan struct{}),
		flows: make(map[netip.AddrPort]*coneFlow), byName: make(map[uint16][]*coneFlow)}
	s.entry.evict = func() { s.end(errUDPEvicted) }
	t.cones[key] = s
	victim := t.addLocked(&s.entry)
	t.mu.Unlock()
	p.evict(victim)
	return s, true
}

// evict ends victim, a session the table let go at its limit; nil is
// nothing to do.
func (p *Proxy) evict(victim *udpEntry) {
	if victim == nil {
		return
	}
	p.stats.udpEvicted.Add(1)
	p.udpWarn.warn(p.log, "udp session limit reached; evicting the least recently used session",
		"max_sessions", p.udp.maxSessions())
	victim.evict()
}

// open dials the session's upstream and starts its reader; it runs once,
// on the creator's goroutine.
func (s *coneSession) open(ctx context.Context, pd PacketDialer, rt Route) {
	limit := s.p.connectTimeoutOf(rt)
	dctx, release := s.p.withTimeout(ctx, limit, timeoutAfter("udp dial timeout", limit))
	up, err := pd.ListenPacket(dctx, s.unreachable)
	release()
	if err == nil {
		// The reader is a handler call of the proxy too: Close waits for it.
		_, end, ok := s.p.begin(context.Background())
		s.mu.Lock()
		switch {
		case !ok:
			err = errUDPClosed
		case s.ended: // evicted while it was opening
			end()
			err = errUDPEvicted
		default:
			s.up = up
			s.wd = newWatchdog(s.p.clock, s.p.limits().udpIdleTimeout, errUDPIdleTimeout, s.end)
			s.p.stats.udpSessions.Add(1)
			s.p.stats.udpActive.Add(1) // before end can take it off again
		}
		s.mu.Unlock()
		if err != nil {
			up.Close()
		} else {
			stop := context.AfterFunc(s.p.ctx, func() { s.end(errUDPClosed) })
			go func() {
				defer end()
				defer stop()
				s.read()
			}()
		}
	}
	if err != nil {
		s.err = fmt.Errorf("proxy: udp via %s: %w", rt.Outbound, err)
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		s.forget()
	} else {
		s.p.log.Debug("udp session opened", "app", s.key.app, "outbound", s.key.outbound, "upstream", up.LocalAddr())
	}
	close(s.ready)
}

// forget takes s out of the table.
func (s *coneSession) forget() {
	t := s.p.udp
	t.mu.Lock()
	if t.cones[s.key] == s {
		delete(t.cones, s.key)
	}
	t.mu.Unlock()
	t.remove(&s.entry)
}

// attach adds a flow to the session; false when it has ended (the caller
// starts another).
func (s *coneSession) attach(f *coneFlow) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	if old := s.flows[f.app]; old != nil {
		// The stack ended the old flow of this destination and started a
		// new one before the old one's goroutine detached it.
		old.conn.Close()
	}
	s.flows[f.app] = f
	switch {
	case !f.dst.Addr.IsValid():
		s.byName[f.dst.Port] = append(s.byName[f.dst.Port], f)
	case f.dst.Addr != f.app:
		if s.alias == nil {
			s.alias = make(map[netip.AddrPort]netip.AddrPort)
		}
		s.alias[f.dst.Addr] = f.app
	}
	return true
}

// detach removes f; the session ends with its last flow, since without
// one it has no way to the app.
func (s *coneSession) detach(f *coneFlow) {
	s.mu.Lock()
	if s.flows[f.app] == f {
		delete(s.flows, f.app)
	}
	if !f.dst.Addr.IsValid() {
		s.byName[f.dst.Port] = removeFlow(s.byName[f.dst.Port], f)
	}
	last := len(s.flows) == 0
	s.mu.Unlock()
	if last {
		s.end(errUDPClosed)
	}
}

func removeFlow(fs []*coneFlow, f *coneFlow) []*coneFlow {
	for i, g := range fs {
		if g == f {
			return append(fs[:i], fs[i+1:]...)
		}
	}
	return fs
}

// end closes the session and all its flows, once.
func (s *coneSession) end(reason error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	flows := make([]*coneFlow, 0, len(s.flows))
	for _, f := range s.flows {
		flows = append(flows, f)
	}
	up, wd := s.up, s.wd // set by open under mu, or never
	s.mu.Unlock()
	s.forget()
	if wd != nil {
		wd.stop()
	}
	if reason == errUDPIdleTimeout {
		s.p.stats.udpIdleTimeouts.Add(1)
	}
	// Everything but the closes first: closing up ends the reader and
	// closing the flows ends their handler calls, after which Close may
	// return while this goroutine (an AfterFunc of the proxy's context)
	// still runs.
	s.p.log.Debug("udp session ended", "app", s.key.app, "outbound", s.key.outbound, "reason", reason)
	if up != nil {
		s.p.stats.udpActive.Add(-1)
		up.Close()
	}
	for _, f := range flows {
		f.conn.Close()
	}
}

func (s *coneSession) touch() {
	s.wd.touch()
	s.p.udp.touch(&s.entry)
}

// lookup returns the flow a datagram from remote belongs to, and the
// source address the app is to see; for a remote the app never sent to, f
// is nil and other is some flow of the session to write through.
func (s *coneSession) lookup(remote netip.AddrPort) (f *coneFlow, src netip.AddrPort, other *coneFlow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src = remote
	if a, ok := s.alias[remote]; ok {
		src = a
	}
	f = s.flows[src]
	if f == nil {
		if fs := s.byName[remote.Port()]; len(fs) == 1 {
			// The upstream proxy resolved the one name this session
			// sent to on this port: the reply comes from that name.
			f, src = fs[0], fs[0].app
			if s.alias == nil {
				s.alias = make(map[netip.AddrPort]netip.AddrPort)
			}
			s.alias[remote] = src
		}
	}
	if f == nil {
		for _, g := range s.flows {
			return nil, src, g
		}
	}
	return f, src, nil
}

// read relays upstream → app until the upstream fails or closes.
func (s *coneSession) read() {
	defer s.end(errUDPClosed)
	bp := s.p.udpBufs.get()
	defer s.p.udpBufs.put(bp)
	buf := *bp
	for {
		n, remote, err := s.up.ReadFrom(buf)
		if err != nil {
			var de *droppedError
			if errors.As(err, &de) {
				s.p.countDropped(de)
				s.p.log.Debug("udp datagram dropped", "app", s.key.app, "outbound", s.key.outbound, "err", err)
				continue
			}
			if !errors.Is(err, net.ErrClosed) {
				s.p.log.Debug("udp upstream failed", "app", s.key.app, "outbound", s.key.outbound, "err", err)
			}
			return
		}
		s.touch()
		f, src, other := s.lookup(remote)
		switch {
		case f != nil:
		case other != nil:
			s.p.stats.udpUnsolicited.Add(1)
			f = other
		default:
			return // no flow left
		}
		_, err = f.dw.WriteFrom(buf[:n], src)
		if err != nil {
			s.p.log.Debug("udp write to app", "app", s.key.app, "from", src, "err", err)
			continue
		}
		s.p.stats.udpPacketsDown.Add(1)
		s.p.stats.udpBytesDown.Add(uint64(n))
		f.e.down.Add(uint64(n))
	}
}

// unreachable passes an upstream ICMP port unreachable from dst on to the
// app, from the address the app sent to.
func (s *coneSession) unreachable(dst netip.AddrPort) {
	s.p.stats.udpPortUnreachable.Add(1)
	f, src, other := s.lookup(dst)
	if f == nil {
		f = other
	}
	if f == nil {
		return
	}
	if err := f.dw.PortUnreachable(src, nil); err != nil {
		s.p.log.Debug("udp port unreachable to app", "app", s.key.app, "from", src, "err", err)
		return
	}
	s.p.stats.udpUnreachableToApp.Add(1)
}

// serveCone relays one flow through the full-cone session of its app
// socket and outbound, until the flow or the session ends.
func (p *Proxy) serveCone(ctx context.Context, conn stack.PacketConn, dw stack.DatagramWriter, rt Route, pd PacketDialer) {
	id := conn.ID()
	key := coneKey{app: id.Src, outbound: rt.Outbound}
	f := &coneFlow{conn: conn, dw: dw, app: id.Dst}
	// Closing the flow's conn ends its reader below, which detaches it;
	// the session goes on while other flows use it.
	f.e = p.newEntry(0, "udp", id, rt, nil, func() { conn.Close() })
	var s *coneSession
	for attempt := 0; ; attempt++ {
		var creator bool
		s, creator = p.cone(key)
		if creator {
			s.open(ctx, pd, rt)
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			p.stats.udpDropped.Add(1)
			return
		}
		if s.err != nil {
			p.stats.udpDropped.Add(1)
			p.warnFD(s.err)
			p.log.Debug("udp dropped", "flow", id, "err", s.err)
			return
		}
		if f.dst.Port == 0 {
			limit := p.connectTimeoutOf(rt)
			rctx, release := p.withTimeout(ctx, limit, timeoutAfter("udp resolve timeout", limit))
			d, err := s.up.Resolve(rctx, rt.target(id))
			release()
			if err != nil {
				p.stats.udpDropped.Add(1)
				p.log.Debug("udp dropped", "flow", id, "err", err)
				return
			}
			f.dst = d
		}
		if s.attach(f) {
			break
		}
		if attempt == 3 {
			p.stats.udpDropped.Add(1)
			return
		}
	}
	defer s.detach(f)
	p.conns.add(f.e)
	defer p.conns.remove(f.e)
	p.stats.udpFlows.Add(1)
	s.touch()

	bp := p.udpBufs.get()
	defer p.udpBufs.put(bp)
	buf := *bp
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		s.touch()
		if err := s.up.WriteTo(buf[:n], f.dst); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			p.stats.udpSendErrors.Add(1)
			p.log.Debug("udp send", "flow", id, "to", f.dst, "err", err)
			continue
		}
		p.stats.udpPacketsUp.Add(1)
		p.stats.udpBytesUp.Add(uint64(n))
		f.e.up.Add(uint64(n))
	}
}

// countDropped counts a datagram an upstream discarded.
func (p *Proxy) countDropped(de *droppedError) {
	switch de.reason {
	case "fragment":
		p.stats.udpFragmentsDropped.Add(1)
	default:
		p.stats.udpMalformedDropped.Add(1)
	}
}

// warnFD warns, rate-limited, when err says the descriptors ran out.
func (p *Proxy) warnFD(err error) {
	if isFDExhausted(err) {
		p.fdWarn.warn(p.log, "udp: out of file descriptors; flows are dropped (raise the open-file limit or lower udp.max_sessions)",
			"err", err)
	}
}
