package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tungate/tungate/internal/clock"
)

// Mode says how A and AAAA queries are answered.
type Mode uint8

const (
	// ModeFakeIP answers A and AAAA with addresses from the Pool.
	ModeFakeIP Mode = iota
	// ModeForward forwards every query and remembers which domain each
	// answered address belongs to.
	ModeForward
)

// Limits and defaults.
const (
	// FakeTTL is the TTL of fake answers: short, so that apps ask again
	// rather than keep an address that a restart with another range
	// would not know.
	FakeTTL = 1
	// MaxQuery is the largest query accepted; real queries are a few
	// hundred bytes.
	MaxQuery = 4096
	// DefaultTimeout bounds one exchange with one upstream server.
	DefaultTimeout = 5 * time.Second
	// cacheSize and memorySize bound the answer cache and the
	// address → domain memory.
	cacheSize  = 4096
	memorySize = 65536
	// maxCacheTTL caps how long an answer is served from the cache;
	// negativeTTL is how long an answer without records is.
	maxCacheTTL = 30 * time.Minute
	negativeTTL = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	Mode Mode
	// Pool hands out the fake addresses (ModeFakeIP).
	Pool *Pool
	// Servers are the upstream resolvers, "host:port", tried in order.
	Servers []string
	// Dial opens the sockets to Servers ("udp" or "tcp"): marked so that
	// they never loop into the TUN.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Exclude are domain suffixes that get real answers in ModeFakeIP
	// (local names).
	Exclude []string
	// Timeout bounds one exchange with one server; 0 is DefaultTimeout.
	Timeout time.Duration
	// Clock ages the cache; nil is the real clock.
	Clock  clock.Clock
	Logger *slog.Logger
}

// Stats are a Server's counters.
type Stats struct {
	// Queries counts the queries handled; FakeAnswers those answered
	// from the Pool, CacheHits those from the cache, Forwarded those sent
	// upstream, ServFail those no server answered.
	Queries, FakeAnswers, CacheHits, Forwarded, ServFail uint64
	// Malformed, Oversized and NotQuery count messages dropped unanswered:
	// unparsable, larger than MaxQuery, or responses sent as queries (a
	// loop); Busy those dropped because their flow had too many queries
	// being answered.
	Malformed, Oversized, NotQuery, Busy uint64
}

// Server answers DNS queries. Its methods are safe for concurrent use.
type Server struct {
	o     Options
	clock clock.Clock
	log   *slog.Logger
	up    atomic.Pointer[upstreams] // o.Servers and o.Exclude, as SetServers last set them

	mu      sync.Mutex // guards cache, order, memory, memOrder
	cache   map[cacheKey]cached
	order   []cacheKey // insertion order, for eviction
	memory  map[netip.Addr]string
	memFIFO []netip.Addr

	queries, fake, hits, forwarded, servfail atomic.Uint64
	malformed, oversized, notQuery, busy     atomic.Uint64
}

type cacheKey struct {
	name          string
	qtype, qclass uint16
}

type cached struct {
	msg     *mdns.Msg
	stored  clock.Time
	expires clock.Time
}

// NewServer returns a Server configured by o.
func NewServer(o Options) *Server {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	s := &Server{o: o, clock: o.Clock, log: o.Logger,
		cache: map[cacheKey]cached{}, memory: map[netip.Addr]string{}}
	if s.clock == nil {
		s.clock = clock.Real()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.SetServers(o.Servers, o.Exclude)
	return s
}

// upstreams are the settings SetServers replaces.
type upstreams struct {
	servers []string
	exclude []string // normalized
}

// SetServers replaces the servers queries are forwarded to and the
// domains excluded from fake addresses (a config reload) and empties the
// answer cache, which the old servers filled. Queries in flight finish
// with what they started with.
func (s *Server) SetServers(servers, exclude []string) {
	u := &upstreams{servers: append([]string(nil), servers...), exclude: make([]string, len(exclude))}
	for i, d := range exclude {
		u.exclude[i] = normalize(d)
	}
	s.up.Store(u)
	s.mu.Lock()
	clear(s.cache)
	s.order = s.order[:0]
	s.mu.Unlock()
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Queries: s.queries.Load(), FakeAnswers: s.fake.Load(), CacheHits: s.hits.Load(),
		Forwarded: s.forwarded.Load(), ServFail: s.servfail.Load(),
		Malformed: s.malformed.Load(), Oversized: s.oversized.Load(), NotQuery: s.notQuery.Load(), Busy: s.busy.Load(),
	}
}

// Domain returns the domain addr stands for: the Pool's for a fake
// address, else the one a forwarded answer gave it.
func (s *Server) Domain(addr netip.Addr) (string, bool) {
	addr = addr.Unmap()
	if p := s.o.Pool; p != nil && p.Contains(addr) {
		return p.Lookup(addr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.memory[addr]
	return d, ok
}

// Handle answers one query message. It returns nil, with the reason, for
// a message that gets no answer (malformed, oversized, not a query). A
// UDP answer larger than the client accepts is truncated (TC set), so the
// client asks again over TCP.
func (s *Server) Handle(ctx context.Context, query []byte, overTCP bool) ([]byte, error) {
	if len(query) > MaxQuery {
		s.oversized.Add(1)
		return nil, fmt.Errorf("dns: query of %d bytes dropped (at most %d)", len(query), MaxQuery)
	}
	var req mdns.Msg
	if err := req.Unpack(query); err != nil {
		s.malformed.Add(1)
		return nil, fmt.Errorf("dns: malformed query dropped: %w", err)
	}
	if req.Response {
		s.notQuery.Add(1)
		return nil, errors.New("dns: a response sent as a query dropped (a loop?)")
	}
	s.queries.Add(1)
	resp := s.answer(ctx, &req)
	if !overTCP {
		size := mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), mdns.MinMsgSize)
		}
		resp.Truncate(size)
	}
	return resp.Pack()
}

func (s *Server) answer(ctx context.Context, req *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg)
	switch {
	case req.Opcode != mdns.OpcodeQuery:
		return resp.SetRcode(req, mdns.RcodeNotImplemented)
	case len(req.Question) != 1:
		return resp.SetRcode(req, mdns.RcodeFormatError)
	}
	q := req.Question[0]
	name := normalize(q.Name)
	if s.o.Mode == ModeFakeIP && q.Qclass == mdns.ClassINET && !s.excluded(name) {
		switch q.Qtype {
		case mdns.TypeA, mdns.TypeAAAA:
			return s.fakeAnswer(req, q, name)
		case mdns.TypeHTTPS, mdns.TypeSVCB:
			// Their address hints would be real addresses, around the
			// fake ones: answer that there are none.
			s.fake.Add(1)
			return resp.SetReply(req)
		}
	}
	return s.forward(ctx, req, q, name)
}

func (s *Server) fakeAnswer(req *mdns.Msg, q mdns.Question, name string) *mdns.Msg {
	resp := new(mdns.Msg).SetReply(req)
	resp.Authoritative = true
	v4, v6, err := s.o.Pool.Assign(name)
	if err != nil {
		s.log.Warn("dns: fake-IP cache file", "err", err)
	}
	hdr := mdns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: mdns.ClassINET, Ttl: FakeTTL}
	if q.Qtype == mdns.TypeA {
		resp.Answer = []mdns.RR{&mdns.A{Hdr: hdr, A: v4.AsSlice()}}
	} else {
		resp.Answer = []mdns.RR{&mdns.AAAA{Hdr: hdr, AAAA: v6.AsSlice()}}
	}
	s.fake.Add(1)
	return resp
}

func (s *Server) excluded(name string) bool {
	for _, sfx := range s.up.Load().exclude {
		if name == sfx || strings.HasSuffix(name, "."+sfx) {
			return true
		}
	}
	return false
}

// forward answers from the cache or the first server that answers.
func (s *Server) forward(ctx context.Context, req *mdns.Msg, q mdns.Question, name string) *mdns.Msg {
	key := cacheKey{name, q.Qtype, q.Qclass}
	if resp := s.cached(key, req); resp != nil {
		s.hits.Add(1)
		return resp
	}
	s.forwarded.Add(1)
	var errs []error
	for _, server := range s.up.Load().servers {
		resp, err := s.exchange(ctx, req, server)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.remember(key, resp)
		return resp
	}
	s.servfail.Add(1)
	s.log.Debug("dns: no server answered", "name", name, "type", mdns.TypeToString[q.Qtype], "err", errors.Join(errs...))
	return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
}

// exchange asks one server over UDP, and again over TCP when the answer
// is truncated.
func (s *Server) exchange(ctx context.Context, req *mdns.Msg, server string) (*mdns.Msg, error) {
	resp, err := s.exchangeOver(ctx, "udp", req, server)
	if err == nil && resp.Truncated {
		resp, err = s.exchangeOver(ctx, "tcp", req, server)
	}
	if err != nil {
		return nil, fmt.Errorf("dns: %s: %w", server, err)
	}
	return resp, nil
}

func (s *Server) exchangeOver(ctx context.Context, network string, req *mdns.Msg, server string) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	c, err := s.o.Dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	client := &mdns.Client{Net: network, UDPSize: mdns.DefaultMsgSize}
	resp, _, err := client.ExchangeWithConnContext(ctx, req, &mdns.Conn{Conn: c})
	if err != nil {
		return nil, err
	}
	if resp.Id != req.Id {
		return nil, errors.New("answer with another id")
	}
	return resp, nil
}

// cached returns a copy of the fresh cached answer to key, with req's id
// and the TTLs aged, or nil.
func (s *Server) cached(key cacheKey, req *mdns.Msg) *mdns.Msg {
	now := s.clock.Now()
	s.mu.Lock()
	c, ok := s.cache[key]
	s.mu.Unlock()
	if !ok || !now.Before(c.expires) {
		return nil
	}
	resp := c.msg.Copy()
	resp.Id = req.Id
	resp.Question = req.Question // the asker's spelling (0x20 case checks)
	age := uint32(now.Sub(c.stored) / time.Second)
	for _, sec := range [][]mdns.RR{resp.Answer, resp.Ns, resp.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != mdns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return resp
}

// remember caches a successful answer for its smallest TTL and notes the
// domain of each address in it.
func (s *Server) remember(key cacheKey, resp *mdns.Msg) {
	if resp.Rcode != mdns.RcodeSuccess && resp.Rcode != mdns.RcodeNameError {
		return
	}
	ttl := negativeTTL
	if len(resp.Answer) > 0 {
		ttl = maxCacheTTL
		for _, rr := range resp.Answer {
			ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
		}
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if ttl > 0 {
		if _, ok := s.cache[key]; !ok {
			if len(s.order) >= cacheSize {
				delete(s.cache, s.order[0])
				s.order = s.order[1:]
			}
			s.order = append(s.order, key)
		}
		s.cache[key] = cached{msg: resp.Copy(), stored: now, expires: now.Add(ttl)}
	}
	for _, rr := range resp.Answer {
		var a netip.Addr
		switch r := rr.(type) {
		case *mdns.A:
			a, _ = netip.AddrFromSlice(r.A.To4())
		case *mdns.AAAA:
			a, _ = netip.AddrFromSlice(r.AAAA)
		default:
			continue
		}
		if _, ok := s.memory[a]; !ok {
			if len(s.memFIFO) >= memorySize {
				delete(s.memory, s.memFIFO[0])
				s.memFIFO = s.memFIFO[1:]
			}
			s.memFIFO = append(s.memFIFO, a)
		}
		s.memory[a] = key.name
	}
}

// normalize lower-cases a name and drops its trailing dot.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
