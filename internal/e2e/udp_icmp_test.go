package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/tungate/tungate/internal/netlab"
)

// TestUDPEcho sends datagrams through the gateway to an echo server and
// expects each back, over IPv4 and IPv6.
func TestUDPEcho(t *testing.T) {
	forEachStack(t, func(t *testing.T, e *env) {
		for _, host := range []string{netlab.ServerAddr4, "[" + netlab.ServerAddr6 + "]"} {
			c, err := e.lab.Client().DialContext(t.Context(), "udp", echoUDP(t, e.lab, host+":0"))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				msg := []byte(fmt.Sprintf("datagram %d via %s", i, host))
				if err := udpRoundTrip(c, msg); err != nil {
					t.Errorf("%s: %v", host, err)
				}
			}
			c.Close()
		}
	})
}

// udpRoundTrip sends msg and waits for its echo, resending a few times as
// a UDP client would.
func udpRoundTrip(c net.Conn, msg []byte) error {
	buf := make([]byte, 2048)
	for range 5 {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			if !bytes.Equal(buf[:n], msg) {
				return fmt.Errorf("echo %q, want %q", buf[:n], msg)
			}
			return nil
		}
		if !os.IsTimeout(err) {
			return err
		}
	}
	return fmt.Errorf("no echo for %q", msg)
}

// TestPing: ICMP echo to an address behind the TUN is answered by the
// gateway's stack, IPv4 and IPv6.
func TestPing(t *testing.T) {
	forEachStack(t, func(t *testing.T, e *env) {
		ping(t, e, "ip4:icmp", "0.0.0.0", netlab.ServerAddr4, ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply, 1)
		ping(t, e, "ip6:ipv6-icmp", "::", netlab.ServerAddr6, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply, 58)
	})
}

func ping(t *testing.T, e *env, network, laddr, dst string, req, rep icmp.Type, proto int) {
	t.Helper()
	var pc *icmp.PacketConn
	err := e.lab.Client().Do(func() error {
		var err error
		pc, err = icmp.ListenPacket(network, laddr)
		return err
	})
	if err != nil {
		t.Fatalf("icmp socket: %v", err)
	}
	defer pc.Close()
	body := &icmp.Echo{ID: 0x7467, Seq: 1, Data: []byte("tungate ping")}
	buf := make([]byte, 1500)
	for attempt := range 5 {
		body.Seq = attempt + 1
		msg, _ := (&icmp.Message{Type: req, Body: body}).Marshal(nil)
		if _, err := pc.WriteTo(msg, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
			t.Fatalf("ping %s: %v", dst, err)
		}
		deadline := time.Now().Add(time.Second)
		for {
			_ = pc.SetReadDeadline(deadline)
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != rep {
				continue
			}
			if echo, ok := m.Body.(*icmp.Echo); ok && echo.Seq == body.Seq && bytes.Equal(echo.Data, body.Data) {
				return
			}
		}
	}
	t.Fatalf("no echo reply from %s", dst)
}
