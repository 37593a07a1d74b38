package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP()
		accepted <- c
	}()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func tcpInfo(t *testing.T, c *net.TCPConn) *unix.TCPInfo {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if gerr != nil {
		t.Fatal(gerr)
	}
	return info
}

// waitState waits until c's kernel state is st (a TCP_* state number).
func waitState(t *testing.T, c *net.TCPConn, st uint8) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); tcpInfo(t, c).State != st; {
		if time.Now().After(deadline) {
			t.Fatalf("state %d, want %d", tcpInfo(t, c).State, st)
		}
		time.Sleep(time.Millisecond)
	}
}

const tcpCloseWait = 8 // include/net/tcp_states.h

func TestReadData_ReturnsEOFWithTheDataWhenTheFINIsQueuedBehindIt(t *testing.T) {
	c, s := tcpPair(t)
	s.Write([]byte("response"))
	s.CloseWrite()
	waitState(t, c, tcpCloseWait) // data and FIN both queued at c
	buf := make([]byte, 100)
	if n, err := readData(c, buf); n != 8 || err != io.EOF {
		t.Fatalf("readData = %d, %v; want 8, io.EOF", n, err)
	}
}

func TestReadData_NoEOFWhileTheConnectionStaysOpen(t *testing.T) {
	c, s := tcpPair(t)
	s.Write([]byte("part"))
	buf := make([]byte, 100)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := readData(c, buf); n != 4 || err != nil {
		t.Fatalf("readData = %d, %v; want 4, nil", n, err)
	}
}

func TestWriteFIN_KernelSocketSendsDataAndFINInOneSegment(t *testing.T) {
	for _, tc := range []struct {
		name     string
		write    func(c *net.TCPConn) error
		segments uint32
	}{
		{"writeFIN", func(c *net.TCPConn) error {
			_, closed, err := writeFIN(c, []byte("response"))
			if !closed {
				t.Error("writeFIN did not report the FIN sent")
			}
			return err
		}, 1},
		// The evented relay's socket side: MSG_MORE, then the shutdown.
		{"sockEnd.tryWrite with fin", func(c *net.TCPConn) error {
			e, ok := endpointOf(nil, c)
			if !ok {
				t.Fatal("a kernel TCP socket is not an endpoint")
			}
			n, err := e.tryWrite([]byte("response"), true)
			if n != len("response") {
				t.Errorf("tryWrite wrote %d bytes", n)
			}
			return err
		}, 1},
		// The control: without the cork Linux sends them apart.
		{"Write then CloseWrite", func(c *net.TCPConn) error {
			if _, err := c.Write([]byte("response")); err != nil {
				return err
			}
			return c.CloseWrite()
		}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := tcpPair(t)
			before := tcpInfo(t, s).Segs_out
			if err := tc.write(s); err != nil {
				t.Fatal(err)
			}
			waitState(t, c, tcpCloseWait)
			if got := tcpInfo(t, s).Segs_out - before; got != tc.segments {
				t.Errorf("%d segments for the data and the FIN, want %d", got, tc.segments)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if b, err := io.ReadAll(c); string(b) != "response" || err != nil {
				t.Errorf("peer read %q, %v", b, err)
			}
		})
	}
}
