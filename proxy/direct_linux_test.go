package proxy_test

import (
	"context"
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tungate/tungate/proxy"
)

// sockopts reads SO_MARK and SO_BINDTODEVICE of c's socket.
func sockopts(t *testing.T, c net.Conn) (mark int, dev string) {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var merr, derr error
	rc.Control(func(fd uintptr) {
		mark, merr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		dev, derr = unix.GetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	})
	if merr != nil || derr != nil {
		t.Fatalf("getsockopt: %v, %v", merr, derr)
	}
	return mark, dev
}

func TestDirect_MarksAndBindsTCPAndUDPSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: SO_MARK needs CAP_NET_ADMIN")
	}
	d := proxy.NewDirect(proxy.DirectOptions{Fwmark: 0x2a, BindInterface: "lo"})
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, tc := range []struct{ network, addr string }{
		{"tcp", listenTCP(t).Addr().String()},
		{"tcp4", listenTCP(t).Addr().String()},
		{"udp", udp.LocalAddr().String()},
	} {
		c, err := d.DialContext(context.Background(), tc.network, tc.addr)
		if err != nil {
			t.Fatalf("dial %s: %v", tc.network, err)
		}
		mark, dev := sockopts(t, c)
		c.Close()
		if mark != 0x2a || dev != "lo" {
			t.Errorf("%s socket: mark %#x, device %q; want 0x2a, lo", tc.network, mark, dev)
		}
	}
}

func TestDirectOptions_SystemResolverMarksItsDNSSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: SO_MARK needs CAP_NET_ADMIN")
	}
	r := proxy.DirectOptions{Fwmark: 0x2a}.SystemResolver()
	if r == net.DefaultResolver || r.Dial == nil {
		t.Fatal("a marking DirectOptions gives the default resolver")
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, tc := range []struct{ network, addr string }{
		{"udp", udp.LocalAddr().String()},
		{"tcp", listenTCP(t).Addr().String()},
	} {
		c, err := r.Dial(context.Background(), tc.network, tc.addr)
		if err != nil {
			t.Fatalf("resolver dial %s: %v", tc.network, err)
		}
		mark, _ := sockopts(t, c)
		c.Close()
		if mark != 0x2a {
			t.Errorf("resolver's %s socket: mark %#x, want 0x2a", tc.network, mark)
		}
	}
	if (proxy.DirectOptions{}).SystemResolver() != net.DefaultResolver {
		t.Error("unmarked DirectOptions: want the default resolver")
	}
}

func TestDirect_UnsetOptionsLeaveSocketUnmarked(t *testing.T) {
	c, err := proxy.NewDirect(proxy.DirectOptions{}).DialContext(context.Background(), "tcp", listenTCP(t).Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if mark, dev := sockopts(t, c); mark != 0 || dev != "" {
		t.Fatalf("mark %#x, device %q; want none", mark, dev)
	}
}

func TestDirect_UpstreamSocketsHaveNoKeepalive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := proxy.NewDirect(proxy.DirectOptions{}).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ka int
	var gerr error
	rc.Control(func(fd uintptr) { ka, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
	if gerr != nil || ka != 0 {
		t.Fatalf("SO_KEEPALIVE = %d (%v); want off: the relay's idle timeout ends dead flows", ka, gerr)
	}
}
