package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
)

// socksServer is a minimal SOCKS5 server (RFC 1928/1929) for tests. On a
// successful CONNECT it does not dial anywhere: it sends Banner right
// behind its reply, in the same write, and then echoes, so tests check
// both the handshake and that no tunnel byte is lost.
type socksServer struct {
	t    *testing.T
	ln   *net.TCPListener
	user string // when set, username/password authentication is demanded
	pass string
	// reply is the CONNECT reply code; 0 succeeds.
	reply byte
	// silent makes the server accept and never answer.
	silent bool

	mu   sync.Mutex // guards reqs
	reqs []socksRequest
	wg   sync.WaitGroup
}

// socksRequest is what the server received for one connection.
type socksRequest struct {
	methods    []byte
	user, pass string
	atyp       byte
	host       string
	port       uint16
}

const socksBanner = "banner sent with the reply"

func startSOCKS(t *testing.T, s *socksServer) *socksServer {
	s.t = t
	s.ln = listenTCP(t)
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() {
				defer c.Close()
				s.serve(c)
			})
		}
	})
	t.Cleanup(func() {
		s.ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *socksServer) addr() string { return s.ln.Addr().String() }

func (s *socksServer) requests() []socksRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]socksRequest(nil), s.reqs...)
}

func (s *socksServer) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(waitLimit))
	if s.silent {
		io.Copy(io.Discard, c)
		return
	}
	var r socksRequest
	ok := s.negotiate(c, &r) && readSocksRequest(c, &r)
	// Recorded before the reply, so a client that got one finds it.
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
	if !ok {
		return
	}
	reply := []byte{5, s.reply, 0, 1, 0, 0, 0, 0, 0, 0}
	if s.reply != 0 {
		c.Write(reply)
		return
	}
	c.Write(append(reply, socksBanner...))
	c.SetDeadline(time.Time{})
	io.Copy(c, c)
}

func (s *socksServer) negotiate(c net.Conn, r *socksRequest) bool {
	head := make([]byte, 2)
	if _, err := io.ReadFull(c, head); err != nil {
		return false
	}
	r.methods = make([]byte, head[1])
	if _, err := io.ReadFull(c, r.methods); err != nil {
		return false
	}
	want := byte(0)
	if s.user != "" {
		want = 2
	}
	for _, m := range r.methods {
		if m == want {
			c.Write([]byte{5, want})
			return want == 0 || s.checkPassword(c, r)
		}
	}
	c.Write([]byte{5, 0xff})
	return false
}

func (s *socksServer) checkPassword(c net.Conn, r *socksRequest) bool {
	readString := func() (string, bool) {
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return "", false
		}
		b := make([]byte, l[0])
		_, err := io.ReadFull(c, b)
		return string(b), err == nil
	}
	var ver [1]byte
	io.ReadFull(c, ver[:])
	var ok1, ok2 bool
	r.user, ok1 = readString()
	r.pass, ok2 = readString()
	if ver[0] != 1 || !ok1 || !ok2 || r.user != s.user || r.pass != s.pass {
		c.Write([]byte{1, 1})
		return false
	}
	c.Write([]byte{1, 0})
	return true
}

func readSocksRequest(c net.Conn, r *socksRequest) bool {
	head := make([]byte, 4)
	if _, err := io.ReadFull(c, head); err != nil || head[0] != 5 || head[1] != 1 {
		return false
	}
	r.atyp = head[3]
	var addr []byte
	switch r.atyp {
	case 1, 4:
		addr = make([]byte, map[byte]int{1: 4, 4: 16}[r.atyp])
		if _, err := io.ReadFull(c, addr); err != nil {
			return false
		}
		ip, _ := netip.AddrFromSlice(addr)
		r.host = ip.String()
	case 3:
		var l [1]byte
		io.ReadFull(c, l[:])
		addr = make([]byte, l[0])
		if _, err := io.ReadFull(c, addr); err != nil {
			return false
		}
		r.host = string(addr)
	default:
		return false
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return false
	}
	r.port = uint16(port[0])<<8 | uint16(port[1])
	return true
}

// expectTunnel checks that c first yields banner and then echoes.
func expectTunnel(t *testing.T, c net.Conn, banner string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(waitLimit))
	got := make([]byte, len(banner))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != banner {
		t.Fatalf("tunnel starts with %q (err %v), want %q", got, err, banner)
	}
	transfer(t, c, c, "echo through the tunnel")
}

func TestSOCKS5_ConnectsWithAddressTypeOfDestination(t *testing.T) {
	for _, tc := range []struct {
		dst  string
		atyp byte
		host string
		port uint16
	}{
		{"127.0.0.1:8080", 1, "127.0.0.1", 8080},
		{"[2001:2::1]:443", 4, "2001:2::1", 443},
		{"[::ffff:198.18.0.7]:53", 1, "198.18.0.7", 53},
		{"svc.example.test:7", 3, "svc.example.test", 7},
	} {
		t.Run(tc.dst, func(t *testing.T) {
			srv := startSOCKS(t, &socksServer{})
			c, err := proxy.NewSOCKS5(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			expectTunnel(t, c, socksBanner)
			r := srv.requests()
			if len(r) != 1 || r[0].atyp != tc.atyp || r[0].host != tc.host || r[0].port != tc.port {
				t.Fatalf("server saw %+v, want atyp %d host %s port %d", r, tc.atyp, tc.host, tc.port)
			}
			if string(r[0].methods) != "\x00" {
				t.Errorf("offered methods %x, want only no-auth", r[0].methods)
			}
		})
	}
}

func TestSOCKS5_AuthenticatesWithUsernamePassword(t *testing.T) {
	srv := startSOCKS(t, &socksServer{user: "alice", pass: "s3cret"})
	c, err := proxy.NewSOCKS5(srv.addr(), "alice", "s3cret", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	expectTunnel(t, c, socksBanner)
	c.Close()
	r := srv.requests()
	if len(r) != 1 || string(r[0].methods) != "\x00\x02" || r[0].user != "alice" || r[0].pass != "s3cret" {
		t.Fatalf("server saw %+v, want methods 00 02 and alice's credentials", r)
	}
}

func TestSOCKS5_WrongPasswordFailsWithEACCES(t *testing.T) {
	srv := startSOCKS(t, &socksServer{user: "alice", pass: "s3cret"})
	_, err := proxy.NewSOCKS5(srv.addr(), "alice", "wrong", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if !errors.Is(err, syscall.EACCES) {
		t.Fatalf("dial error %v, want EACCES", err)
	}
}

func TestSOCKS5_ServerDemandingAuthWithoutCredentialsFails(t *testing.T) {
	srv := startSOCKS(t, &socksServer{user: "alice", pass: "s3cret"})
	_, err := proxy.NewSOCKS5(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if err == nil {
		t.Fatal("dial succeeded")
	}
}

func TestSOCKS5_FailureRepliesMapToKernelErrors(t *testing.T) {
	for _, tc := range []struct {
		reply byte
		want  error
	}{
		{0x01, nil},
		{0x02, syscall.EACCES},
		{0x03, syscall.ENETUNREACH},
		{0x04, syscall.EHOSTUNREACH},
		{0x05, syscall.ECONNREFUSED},
		{0x06, syscall.ETIMEDOUT},
		{0x07, syscall.EOPNOTSUPP},
		{0x08, syscall.EAFNOSUPPORT},
		{0x09, nil},
	} {
		t.Run(fmt.Sprintf("reply%02x", tc.reply), func(t *testing.T) {
			srv := startSOCKS(t, &socksServer{reply: tc.reply})
			_, err := proxy.NewSOCKS5(srv.addr(), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
			if err == nil {
				t.Fatal("dial succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("dial error %v, want %v", err, tc.want)
			}
			if tc.want == nil && errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial error %v claims a refusal", err)
			}
		})
	}
}

func TestSOCKS5_SilentServerTimesOutWithContext(t *testing.T) {
	srv := startSOCKS(t, &socksServer{silent: true})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := proxy.NewSOCKS5(srv.addr(), "", "", nil).DialContext(ctx, "tcp", "127.0.0.1:80")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dial error %v, want a deadline error", err)
	}
}

func TestSOCKS5_RejectsOtherNetworks(t *testing.T) {
	_, err := proxy.NewSOCKS5("127.0.0.1:1", "", "", nil).DialContext(context.Background(), "unixgram", "/tmp/x")
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("dial error %v, want ErrUnsupported", err)
	}
}

func TestSOCKS5_UnreachableServerIsRefusal(t *testing.T) {
	_, err := proxy.NewSOCKS5(closedPort(t), "", "", nil).DialContext(context.Background(), "tcp", "127.0.0.1:80")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial error %v, want ECONNREFUSED", err)
	}
}

func TestHandleTCP_SOCKS5RefusalResetsApp(t *testing.T) {
	srv := startSOCKS(t, &socksServer{reply: 0x05})
	h := newHarness(t, proxy.Options{Dialer: proxy.NewSOCKS5(srv.addr(), "", "", nil)})
	req, done := h.handleTCP("127.0.0.1:80")
	waitClosed(t, done, "handler")
	if d := req.Decision(); !d.Rejected || !d.Reset {
		t.Fatalf("decision = %+v, want Reject(true)", d)
	}
	if s := h.p.Stats(); s.TCPRefused != 1 {
		t.Fatalf("stats = %+v, want one refusal", s)
	}
}

func TestHandleTCP_RelaysThroughSOCKS5(t *testing.T) {
	srv := startSOCKS(t, &socksServer{user: "u", pass: "p"})
	h := newHarness(t, proxy.Options{Dialer: proxy.NewSOCKS5(srv.addr(), "u", "p", nil)})
	req, done := h.handleTCP("127.0.0.1:80")
	waitClosed(t, req.Decided(), "decision")
	app := req.App()
	if app == nil {
		t.Fatalf("decision = %+v, want Accept", req.Decision())
	}
	expectTunnel(t, app, socksBanner)
	app.CloseWrite()
	wantEOF(t, app, "app") // the echo server closes after our FIN
	waitClosed(t, done, "relay end")
}
