package bench

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestServeEcho_SaysWhereItListensEchoesAndStopsAtEOF(t *testing.T) {
	stopR, stopW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- ServeEcho("127.0.0.1:0", stopR, outW) }()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), echoReadyPrefix)
	if !ok {
		t.Fatalf("first line %q, want %q ADDR", line, echoReadyPrefix)
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	stopW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeEcho: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeEcho did not return at EOF")
	}
	if _, err := c.Read(buf); err == nil {
		t.Error("the connection is still open after ServeEcho returned")
	}
}
