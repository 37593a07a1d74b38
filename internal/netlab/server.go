package netlab

import (
	"fmt"
	"net"
	"sync"
)

// Server accepts TCP connections in a namespace and runs a handler on
// each in its own goroutine. Close stops it and waits for every handler.
type Server struct {
	ln     net.Listener
	handle func(*net.TCPConn)
	wg     sync.WaitGroup // accept loop and handlers

	mu     sync.Mutex // guards conns and closed
	conns  map[*net.TCPConn]struct{}
	closed bool
}

// Serve listens on addr in ns and runs handle on every connection.
func Serve(ns *NS, addr string, handle func(*net.TCPConn)) (*Server, error) {
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netlab: listen %s: %w", addr, err)
	}
	return ServeListener(ln, handle), nil
}

// ServeListener runs handle on every connection ln accepts, for a
// listener opened elsewhere (a process already in the namespace).
func ServeListener(ln net.Listener, handle func(*net.TCPConn)) *Server {
	s := &Server{ln: ln, handle: handle, conns: make(map[*net.TCPConn]struct{})}
	s.wg.Go(s.acceptLoop)
	return s
}

// Addr is the address clients dial.
func (s *Server) Addr() string { return s.ln.Addr().String() }

func (s *Server) acceptLoop() {
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

func (s *Server) track(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *net.TCPConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops accepting, closes every open connection (which unblocks
// the handlers' I/O) and waits for the handlers to return. It is
// idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}
