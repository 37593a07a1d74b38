package bench

import (
	"fmt"
	"net"
	"sync"

	"github.com/tungate/tungate/internal/netlab"
)

// server accepts TCP connections in the server namespace and runs handle
// on each in its own goroutine. Close stops it and waits for every
// handler.
type server struct {
	ln     net.Listener
	handle func(*net.TCPConn)
	wg     sync.WaitGroup // accept loop and handlers

	mu     sync.Mutex // guards conns and closed
	conns  map[*net.TCPConn]struct{}
	closed bool
}

// startServer listens on a fresh port of ServerAddr4 in ns.
func startServer(ns *netlab.NS, handle func(*net.TCPConn)) (*server, error) {
	return startServerOn(ns, netlab.ServerAddr4+":0", handle)
}

func startServerOn(ns *netlab.NS, addr string, handle func(*net.TCPConn)) (*server, error) {
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bench: listen %s: %w", addr, err)
	}
	s := &server{ln: ln, handle: handle, conns: make(map[*net.TCPConn]struct{})}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// Addr is the address clients dial.
func (s *server) Addr() string { return s.ln.Addr().String() }

func (s *server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		tc := c.(*net.TCPConn)
		if !s.track(tc) {
			tc.Close()
			return
		}
		s.wg.Go(func() {
			defer s.untrack(tc)
			s.handle(tc)
		})
	}
}

func (s *server) track(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) untrack(c *net.TCPConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops accepting, closes every open connection (which unblocks
// the handlers' I/O) and waits for the handlers to return. It is
// idempotent.
func (s *server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}
