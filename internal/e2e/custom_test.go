package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tungate/tungate/internal/netlab"
	"github.com/tungate/tungate/internal/packet"
)

// TestPortReuseThroughTimeWait: the server closes first, so the gateway's
// side of each connection ends in TIME-WAIT, and the client reconnects
// at once from the same few ports, as a busy client reusing ports does.
// Every SYN that meets TIME-WAIT must start a new connection (RFC 6191
// with timestamps): zero failures and no stall.
func TestPortReuseThroughTimeWait(t *testing.T) {
	const ports, rounds = 25, 80 // 2000 connections through 25 client ports
	e := startGateway(t, "custom")
	addr := e.listen(t, netlab.ServerAddr4+":0", func(c *net.TCPConn) {
		c.Write([]byte("x"))
		// Closing first: the FIN reaches the app through the gateway,
		// which then does the active close towards the app.
	})
	start := time.Now()
	for r := range rounds {
		for p := range ports {
			local := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(20000+p))
			if err := reuseOnce(e, local, addr); err != nil {
				t.Fatalf("round %d, port %d: %v", r, local.Port(), err)
			}
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d connections through %d client ports in %v: %.0f conn/s",
		ports*rounds, ports, elapsed.Round(time.Millisecond), float64(ports*rounds)/elapsed.Seconds())
	e.stop(t)
	if n := statCounter(t, e.logs(), "TimeWaitReuses"); n < ports*(rounds-1)/2 {
		t.Fatalf("TIME-WAIT reuses %d; want most of the %d reconnects to meet TIME-WAIT", n, ports*(rounds-1))
	}
}

// reuseOnce connects from local, reads the server's byte and EOF, closes.
func reuseOnce(e *env, local netip.AddrPort, addr string) error {
	d := netlab.Dialer{NS: e.lab.Client(), LocalAddr: local}
	var c net.Conn
	var err error
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err = d.DialContext(ctx, "tcp", addr)
		cancel()
		// The client's own previous socket may still be in LAST-ACK for
		// a moment; that is the client kernel, not the gateway.
		if err != nil && (errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)) && try < 50 {
			time.Sleep(time.Millisecond)
			continue
		}
		break
	}
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := readAllTimeout(c, 3*time.Second)
	if err != nil || string(b) != "x" {
		return fmt.Errorf("read %q, %v", b, err)
	}
	return nil
}

// statCounter finds a counter in the gateway's shutdown summary.
func statCounter(t *testing.T, logs, name string) int {
	t.Helper()
	m := regexp.MustCompile(`[{ ]` + name + `:(\d+)`).FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no %s in the gateway's shutdown summary:\n%s", name, tail(logs, 5))
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestTransferUnderLossReorderDuplication injects seeded faults between
// the TUN and the stack, both directions, and moves data both ways with
// byte-exact checksums.
func TestTransferUnderLossReorderDuplication(t *testing.T) {
	const size = 8 << 20
	for _, kind := range stacks {
		t.Run(kind, func(t *testing.T) {
			e := startGateway(t, kind, "--faults", "loss=0.01,dup=0.01,reorder=0.02,seed=7")
			got := make(chan [32]byte, 1)
			want := make(chan [32]byte, 1)
			addr := e.listen(t, netlab.ServerAddr4+":0", func(c *net.TCPConn) {
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				done := make(chan struct{})
				go func() {
					defer close(done)
					sum, _ := stream(c, size, 11)
					c.CloseWrite()
					want <- sum
				}()
				_, sum, _ := drain(c)
				got <- sum
				<-done // the handler's return closes c
			})
			c, err := e.dial(context.Background(), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			sent := make(chan [32]byte, 1)
			go func() {
				sum, _ := stream(c, size, 12)
				c.CloseWrite()
				sent <- sum
			}()
			n, down, err := drain(c)
			if err != nil || n != size {
				t.Fatalf("download %d bytes, %v", n, err)
			}
			if down != <-want {
				t.Fatal("download corrupted under faults")
			}
			if <-sent != <-got {
				t.Fatal("upload corrupted under faults")
			}
			e.stop(t)
			// The faults really happened, both ways.
			if statCounter(t, e.logs(), "Dropped") == 0 || statCounter(t, e.logs(), "Reordered") == 0 {
				t.Fatalf("no faults were injected:\n%s", tail(e.logs(), 5))
			}
			if kind == "custom" && statCounter(t, e.logs(), "Retransmits") == 0 {
				t.Fatal("the engine never retransmitted under loss")
			}
		})
	}
}

// TestSYNFloodRealClientsStillConnect floods the gateway with SYNs from
// spoofed sources while a real client keeps connecting: with small
// backlogs the engine answers the flood with SYN cookies and every real
// connection succeeds.
func TestSYNFloodRealClientsStillConnect(t *testing.T) {
	e := startGateway(t, "custom", "--log-level", "info")
	addr := e.listen(t, netlab.ServerAddr4+":0", func(c *net.TCPConn) {
		var b [1]byte
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, b[:]); err == nil {
			c.Write(b[:])
		}
	})
	dst := netip.MustParseAddrPort(addr)

	ctx, cancel := context.WithCancel(context.Background())
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := synFlood(ctx, e, dst, &sent); err != nil {
			t.Errorf("flood: %v", err)
		}
	}()
	// Let the flood fill the backlogs before and while real clients come.
	for sent.Load() < 3000 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	const clients = 100
	for i := range clients {
		if err := pingOnce(e, addr, i); err != nil {
			cancel()
			wg.Wait()
			t.Fatalf("real client %d during the flood: %v", i, err)
		}
	}
	cancel()
	wg.Wait()
	t.Logf("%d spoofed SYNs sent; %d real connections all succeeded", sent.Load(), clients)
	e.stop(t)
	if n := statCounter(t, e.logs(), "CookiesSent"); n == 0 {
		t.Fatal("the flood never triggered SYN cookies")
	}
}

func pingOnce(e *env, addr string, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.dial(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{byte(i)}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != byte(i) {
		return fmt.Errorf("echo %v, %v", b[0], err)
	}
	return nil
}

// synFlood sends SYNs with random spoofed sources in 198.18.0.0/15 to dst
// from a raw socket in the client namespace (unmarked, so routed into the
// TUN), until ctx ends or 40000 are sent.
func synFlood(ctx context.Context, e *env, dst netip.AddrPort, sent *atomic.Int64) error {
	var fd int
	err := e.lab.Client().Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 128)
	to := &unix.SockaddrInet4{Addr: dst.Addr().As4()}
	for sent.Load() < 40000 && ctx.Err() == nil {
		// 198.18.0.0/15 minus the TUN's own address.
		src := netip.AddrFrom4([4]byte{198, 18 + byte(rng.IntN(2)), byte(rng.IntN(256)), byte(2 + rng.IntN(250))})
		n, err := packet.BuildTCP(buf, packet.TCPHeader{
			Src: netip.AddrPortFrom(src, uint16(1024+rng.IntN(60000))), Dst: dst,
			Seq: rng.Uint32(), Flags: packet.SYN, Window: 64240,
			Options: &packet.TCPOptions{MSS: 1460, HasMSS: true, HasTS: true, TSVal: rng.Uint32(), SACKPermitted: true, WScale: 7, HasWScale: true},
		}, nil)
		if err != nil {
			return err
		}
		if err := unix.Sendto(fd, buf[:n], 0, to); err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
				time.Sleep(time.Millisecond)
				continue
			}
			return err
		}
		if sent.Add(1)%500 == 0 {
			time.Sleep(time.Millisecond) // a flood, not a busy loop starving the test
		}
	}
	return nil
}

// TestTraceLadder runs the gateway with --trace and checks that one
// connection's handshake and teardown are printed, both sides.
func TestTraceLadder(t *testing.T) {
	const port = 18080
	e := startGateway(t, "custom", "--trace", strconv.Itoa(port))
	e.listen(t, netlab.ServerAddr4+":"+strconv.Itoa(port), func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		c.Write(b)
	})
	c, err := e.dial(context.Background(), netlab.ServerAddr4+":"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	c.CloseWrite()
	if b, err := readAllTimeout(c, 5*time.Second); err != nil || string(b) != "hello" {
		t.Fatalf("echo %q, %v", b, err)
	}
	c.Close()
	time.Sleep(100 * time.Millisecond) // let the last ACK be traced
	e.stop(t)
	logs := e.logs()
	for _, want := range []string{
		"SYN held while the handler decides",
		"outbound upstream (final)",
		"dial 198.19.0.2:18080",
		"connected",
		"app ◄── gw  S. ",
		"state SYN-RECEIVED → ESTABLISHED",
		"FIN (CloseWrite",
		"state ESTABLISHED → CLOSE-WAIT",
		"state LAST-ACK → CLOSED",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("trace lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", logs)
	}
}
