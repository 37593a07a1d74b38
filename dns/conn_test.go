package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func packQuery(t *testing.T, name string) []byte {
	t.Helper()
	b, err := new(mdns.Msg).SetQuestion(name, mdns.TypeA).Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDial_UDPAnswersEachDatagram(t *testing.T) {
	s := newServer(t, ModeFakeIP, nil, nil)
	c, err := s.DialContext(context.Background(), "udp", "198.18.0.53:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"a.test.", "b.test."} {
		if _, err := c.Write(packQuery(t, name)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		var m mdns.Msg
		if err != nil || m.Unpack(buf[:n]) != nil || len(m.Answer) != 1 || m.Question[0].Name != name {
			t.Fatalf("%s: answer %v (%v)", name, m, err)
		}
	}
	if c.RemoteAddr().String() != "198.18.0.53:53" {
		t.Errorf("remote %s", c.RemoteAddr())
	}
}

func TestDial_UDPCloseUnblocksRead(t *testing.T) {
	s := newServer(t, ModeFakeIP, nil, nil)
	c, _ := s.DialContext(context.Background(), "udp", "198.18.0.53:53")
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		done <- err
	}()
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := c.Write(packQuery(t, "a.test.")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
}

func TestDial_TCPStreamOfFramedMessages(t *testing.T) {
	s := newServer(t, ModeFakeIP, nil, nil)
	c, err := s.DialContext(context.Background(), "tcp", "198.18.0.53:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, name := range []string{"a.test.", "b.test."} {
		q := packQuery(t, name)
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			t.Fatal(err)
		}
		var hdr [2]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatal(err)
		}
		out := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, out); err != nil {
			t.Fatal(err)
		}
		var m mdns.Msg
		if m.Unpack(out) != nil || len(m.Answer) != 1 {
			t.Fatalf("%s: answer %v", name, m)
		}
	}
}

func TestDial_ServesGosResolver(t *testing.T) {
	u := startUpstream(t)
	s := newServer(t, ModeForward, []string{u.addr}, nil)
	r := &net.Resolver{PreferGo: true, Dial: s.DialContext}
	addrs, err := r.LookupNetIP(context.Background(), "ip4", "name.test")
	if err != nil || len(addrs) != 1 || addrs[0].String() != "198.19.0.7" {
		t.Errorf("LookupNetIP: %v, %v; want 198.19.0.7", addrs, err)
	}
}

// TestDial_AMiekgClientGetsAnswers runs a miekg/dns client against the
// server over both of its transports.
func TestDial_AMiekgClientGetsAnswers(t *testing.T) {
	s := newServer(t, ModeFakeIP, nil, nil)
	for _, network := range []string{"udp", "tcp"} {
		c, err := s.DialContext(context.Background(), network, "198.18.0.53:53")
		if err != nil {
			t.Fatal(err)
		}
		client := &mdns.Client{Net: network}
		q := new(mdns.Msg).SetQuestion("www.example.test.", mdns.TypeAAAA)
		resp, _, err := client.ExchangeWithConnContext(context.Background(), q, &mdns.Conn{Conn: c})
		c.Close()
		if err != nil || len(resp.Answer) != 1 || resp.Answer[0].(*mdns.AAAA).Hdr.Ttl != FakeTTL {
			t.Errorf("%s: %v (%v)", network, resp, err)
		}
	}
}

func TestDial_UDPFloodIsBounded(t *testing.T) {
	release := make(chan struct{})
	s := NewServer(Options{Mode: ModeForward, Servers: []string{"198.19.0.2:53"}, Timeout: time.Minute,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-release // every forward hangs until the end
			return nil, net.ErrClosed
		}})
	c, _ := s.DialContext(context.Background(), "udp", "198.18.0.53:53")
	for range maxInflight + 10 {
		if _, err := c.Write(packQuery(t, "a.test.")); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Stats().Busy; got != 10 {
		t.Errorf("Busy = %d, want the 10 beyond %d in flight", got, maxInflight)
	}
	close(release)
	c.Close()
}

func TestServer_CachedAnswerKeepsTheAskersSpelling(t *testing.T) {
	u := startUpstream(t)
	s := newServer(t, ModeForward, []string{u.addr}, nil)
	query(t, s, "a.test", mdns.TypeA, false)
	if m := query(t, s, "A.TeSt", mdns.TypeA, false); m.Question[0].Name != "A.TeSt." || u.udp.Load() != 1 {
		t.Errorf("cached answer's question %q after %d upstream queries", m.Question[0].Name, u.udp.Load())
	}
}
