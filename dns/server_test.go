package dns

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/tungate/tungate/internal/clock"
)

// upstream is a DNS server on loopback that answers A queries with
// 198.19.0.7 (TTL 60) and counts what it gets; names starting with "big"
// get 40 A records, truncated over UDP.
type upstream struct {
	addr     string
	udp, tcp atomic.Int32
	servers  []*mdns.Server
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	// A UDP port whose TCP twin is free too: another test may hold it.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatal(err)
		}
	}
	u.addr = pc.LocalAddr().String()
	handler := func(counter *atomic.Int32) mdns.HandlerFunc {
		return func(w mdns.ResponseWriter, r *mdns.Msg) {
			counter.Add(1)
			m := new(mdns.Msg).SetReply(r)
			q := r.Question[0]
			n := 1
			if strings.HasPrefix(q.Name, "big") {
				n = 40
			}
			if q.Qtype == mdns.TypeA {
				for i := range n {
					m.Answer = append(m.Answer, &mdns.A{
						Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
						A:   net.IPv4(198, 19, 0, byte(7+i)),
					})
				}
			}
			if w.LocalAddr().Network() == "udp" {
				m.Truncate(mdns.MinMsgSize)
			}
			_ = w.WriteMsg(m)
		}
	}
	u.servers = []*mdns.Server{
		{PacketConn: pc, Handler: handler(&u.udp)},
		{Listener: ln, Handler: handler(&u.tcp)},
	}
	for _, s := range u.servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
	}
	t.Cleanup(func() {
		for _, s := range u.servers {
			_ = s.Shutdown()
		}
	})
	return u
}

func dialPlain(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func newServer(t *testing.T, mode Mode, servers []string, clk clock.Clock) *Server {
	t.Helper()
	o := Options{Mode: mode, Servers: servers, Dial: dialPlain, Clock: clk, Exclude: []string{"Local.Test."}, Timeout: 2 * time.Second}
	if mode == ModeFakeIP {
		o.Pool = newTestPool(t, nil)
	}
	return NewServer(o)
}

func query(t *testing.T, s *Server, name string, qtype uint16, overTCP bool) *mdns.Msg {
	t.Helper()
	q := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), qtype)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Handle(context.Background(), b, overTCP)
	if err != nil {
		t.Fatalf("Handle(%s): %v", name, err)
	}
	var resp mdns.Msg
	if err := resp.Unpack(out); err != nil {
		t.Fatalf("answer does not parse: %v", err)
	}
	if resp.Id != q.Id || !resp.Response {
		t.Fatalf("answer id %d response %v, want %d true", resp.Id, resp.Response, q.Id)
	}
	return &resp
}

func answerAddr(t *testing.T, m *mdns.Msg) (netip.Addr, uint32) {
	t.Helper()
	if len(m.Answer) == 0 {
		t.Fatalf("no answer: %v", m)
	}
	switch r := m.Answer[0].(type) {
	case *mdns.A:
		a, _ := netip.AddrFromSlice(r.A.To4())
		return a, r.Hdr.Ttl
	case *mdns.AAAA:
		a, _ := netip.AddrFromSlice(r.AAAA)
		return a, r.Hdr.Ttl
	}
	t.Fatalf("answer %v", m.Answer[0])
	return netip.Addr{}, 0
}

func TestServer_FakeIPAnswersAndRemembersTheDomain(t *testing.T) {
	u := startUpstream(t)
	s := newServer(t, ModeFakeIP, []string{u.addr}, nil)
	a, ttl := answerAddr(t, query(t, s, "WWW.Example.test", mdns.TypeA, false))
	if !range4.Contains(a) || ttl != FakeTTL {
		t.Errorf("A: %s ttl %d, want an address of %s with ttl %d", a, ttl, range4, FakeTTL)
	}
	a6, _ := answerAddr(t, query(t, s, "www.example.test", mdns.TypeAAAA, false))
	if !range6.Contains(a6) {
		t.Errorf("AAAA: %s, want one of %s", a6, range6)
	}
	if again, _ := answerAddr(t, query(t, s, "www.example.test.", mdns.TypeA, false)); again != a {
		t.Errorf("the same name got %s, then %s", a, again)
	}
	for _, addr := range []netip.Addr{a, a6} {
		if d, ok := s.Domain(addr); !ok || d != "www.example.test" {
			t.Errorf("Domain(%s) = %q, %v", addr, d, ok)
		}
	}
	if u.udp.Load() != 0 {
		t.Errorf("fake answers asked the upstream %d times", u.udp.Load())
	}
	if st := s.Stats(); st.FakeAnswers != 3 || st.Queries != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestServer_FakeIPHidesHTTPSRecords(t *testing.T) {
	s := newServer(t, ModeFakeIP, nil, nil)
	m := query(t, s, "www.example.test", mdns.TypeHTTPS, false)
	if m.Rcode != mdns.RcodeSuccess || len(m.Answer) != 0 {
		t.Errorf("HTTPS: rcode %d, %d answers; want NOERROR and none", m.Rcode, len(m.Answer))
	}
}

func TestServer_ExcludedAndOtherTypesAreForwarded(t *testing.T) {
	u := startUpstream(t)
	s := newServer(t, ModeFakeIP, []string{u.addr}, nil)
	a, _ := answerAddr(t, query(t, s, "printer.local.test", mdns.TypeA, false))
	if a != netip.MustParseAddr("198.19.0.7") {
		t.Errorf("excluded name: %s, want the real 198.19.0.7", a)
	}
	query(t, s, "www.example.test", mdns.TypeMX, false)
	if u.udp.Load() != 2 {
		t.Errorf("upstream asked %d times, want 2", u.udp.Load())
	}
	if d, ok := s.Domain(a); !ok || d != "printer.local.test" {
		t.Errorf("Domain(%s) = %q, %v; want the forwarded answer's name", a, d, ok)
	}
}

func TestServer_ForwardCachesByTTL(t *testing.T) {
	u := startUpstream(t)
	clk := clock.NewManual(0)
	s := newServer(t, ModeForward, []string{u.addr}, clk)
	query(t, s, "a.test", mdns.TypeA, false)
	clk.Advance(20 * time.Second)
	_, ttl := answerAddr(t, query(t, s, "a.test", mdns.TypeA, false))
	if u.udp.Load() != 1 || ttl != 40 {
		t.Errorf("cached answer: upstream asked %d times, ttl %d; want 1 and 40", u.udp.Load(), ttl)
	}
	clk.Advance(41 * time.Second)
	query(t, s, "a.test", mdns.TypeA, false)
	if u.udp.Load() != 2 {
		t.Errorf("after the TTL: upstream asked %d times, want 2", u.udp.Load())
	}
	if st := s.Stats(); st.CacheHits != 1 || st.Forwarded != 2 {
		t.Errorf("stats %+v", st)
	}
	if d, ok := s.Domain(netip.MustParseAddr("198.19.0.7")); !ok || d != "a.test" {
		t.Errorf("Domain = %q, %v", d, ok)
	}
}

func TestServer_TruncatedAnswerIsAskedAgainOverTCP(t *testing.T) {
	u := startUpstream(t)
	s := newServer(t, ModeForward, []string{u.addr}, nil)
	m := query(t, s, "big.test", mdns.TypeA, true)
	if len(m.Answer) != 40 || u.tcp.Load() != 1 {
		t.Errorf("%d answers after %d TCP exchanges; want 40 after 1", len(m.Answer), u.tcp.Load())
	}
	// The same answer over UDP to a client without EDNS is truncated.
	m = query(t, s, "big.test", mdns.TypeA, false)
	if !m.Truncated || len(m.Answer) >= 40 {
		t.Errorf("UDP answer: truncated %v with %d records; want TC and fewer", m.Truncated, len(m.Answer))
	}
}

func TestServer_NoServerAnswersIsSERVFAIL(t *testing.T) {
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := pc.LocalAddr().String()
	pc.Close()
	s := newServer(t, ModeForward, []string{dead}, nil)
	m := query(t, s, "a.test", mdns.TypeA, false)
	if m.Rcode != mdns.RcodeServerFailure || s.Stats().ServFail != 1 {
		t.Errorf("rcode %d, stats %+v; want SERVFAIL", m.Rcode, s.Stats())
	}
}

func TestServer_DropsWhatIsNoQuery(t *testing.T) {
	s := newServer(t, ModeFakeIP, nil, nil)
	resp := new(mdns.Msg).SetQuestion("a.test.", mdns.TypeA)
	resp.Response = true
	looped, _ := resp.Pack()
	for name, msg := range map[string][]byte{
		"malformed": {0x12, 0x34, 0x01},
		"oversized": make([]byte, MaxQuery+1),
		"response":  looped,
	} {
		if out, err := s.Handle(context.Background(), msg, false); out != nil || err == nil {
			t.Errorf("%s: answered %d bytes (%v)", name, len(out), err)
		}
	}
	if st := s.Stats(); st.Malformed != 1 || st.Oversized != 1 || st.NotQuery != 1 || st.Queries != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestServer_MultipleQuestionsAreFORMERR(t *testing.T) {
	s := newServer(t, ModeFakeIP, nil, nil)
	q := new(mdns.Msg).SetQuestion("a.test.", mdns.TypeA)
	q.Question = append(q.Question, mdns.Question{Name: "b.test.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
	b, _ := q.Pack()
	out, err := s.Handle(context.Background(), b, false)
	var m mdns.Msg
	if err != nil || m.Unpack(out) != nil || m.Rcode != mdns.RcodeFormatError {
		t.Errorf("rcode %d (%v), want FORMERR", m.Rcode, err)
	}
}

// FuzzHandle: any message gets no answer or one that parses, and nothing
// panics.
func FuzzHandle(f *testing.F) {
	for _, name := range []string{"a.test.", "local.test.", "x."} {
		for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeHTTPS, mdns.TypeMX} {
			b, _ := new(mdns.Msg).SetQuestion(name, qt).Pack()
			f.Add(b)
		}
	}
	p, err := NewPool(range4, range6, []netip.Addr{tunIP}, nil)
	if err != nil {
		f.Fatal(err)
	}
	s := NewServer(Options{Mode: ModeFakeIP, Pool: p, Exclude: []string{"local.test"},
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, net.ErrClosed }})
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, err := s.Handle(context.Background(), msg, len(msg)%2 == 0)
		if err == nil {
			var m mdns.Msg
			if uerr := m.Unpack(out); uerr != nil {
				t.Fatalf("answer does not parse: %v", uerr)
			}
		}
	})
}

func TestServer_SetServersSwitchesUpstreamsAndExclusions(t *testing.T) {
	a, b := startUpstream(t), startUpstream(t)
	s := newServer(t, ModeFakeIP, []string{a.addr}, nil)
	query(t, s, "local.test", mdns.TypeA, false) // excluded: forwarded to a
	if a.udp.Load() != 1 {
		t.Fatalf("a got %d queries, want 1", a.udp.Load())
	}
	s.SetServers([]string{b.addr}, []string{"Other.Test"})
	// local.test is no longer excluded: a fake address, no server asked.
	if addr, _ := answerAddr(t, query(t, s, "local.test", mdns.TypeA, false)); !range4.Contains(addr) {
		t.Errorf("local.test got %s, want a fake address now that it is not excluded", addr)
	}
	if a.udp.Load() != 1 || b.udp.Load() != 0 {
		t.Errorf("queries a %d b %d, want 1 and 0", a.udp.Load(), b.udp.Load())
	}
	query(t, s, "www.other.test", mdns.TypeA, false)
	if a.udp.Load() != 1 || b.udp.Load() != 1 {
		t.Errorf("queries a %d b %d, want 1 and 1: the new exclusion goes to the new server", a.udp.Load(), b.udp.Load())
	}
}
