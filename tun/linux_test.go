//go:build linux

package tun_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tungate/tungate/tun"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// testNetns creates a named network namespace that is deleted when the test
// ends, and returns a handle to it. The calling thread is back in its own
// namespace when it returns.
func testNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and a TUN device")
	}
	name := "tgtun-" + hex.EncodeToString(randomBytes(t, 4))
	var ns netns.NsHandle
	inThreadNetns(t, func(netns.NsHandle) {
		var err error
		if ns, err = netns.NewNamed(name); err != nil {
			t.Fatalf("create netns %s: %v", name, err)
		}
	})
	t.Cleanup(func() {
		_ = ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// inThreadNetns runs fn on a locked OS thread and restores the thread's
// namespace afterwards. fn may switch namespaces (it gets the original);
// if restoring fails the thread stays locked and dies with the goroutine.
func inThreadNetns(t *testing.T, fn func(orig netns.NsHandle)) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	defer func() {
		err := netns.Set(orig)
		_ = orig.Close()
		if err != nil {
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn(orig)
}

// inNetns runs fn with the calling thread inside ns.
func inNetns(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	inThreadNetns(t, func(netns.NsHandle) {
		if err := netns.Set(ns); err != nil {
			t.Fatalf("enter netns: %v", err)
		}
		fn()
	})
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func nsHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in test netns: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

var (
	tunAddr4  = netip.MustParsePrefix("198.18.0.1/15")
	tunAddr6  = netip.MustParsePrefix("2001:2::1/64")
	tunRoute  = netip.MustParsePrefix("198.19.5.0/24")
	peerAddr4 = netip.MustParseAddrPort("198.19.5.9:9")
)

func openInNetns(t *testing.T, ns netns.NsHandle, cfg tun.Config) (*tun.Linux, error) {
	t.Helper()
	var dev *tun.Linux
	var err error
	inNetns(t, ns, func() { dev, err = tun.Open(cfg, nil) })
	if dev != nil {
		t.Cleanup(func() { _ = dev.Close() })
	}
	return dev, err
}

func TestOpen_AssignsAddressesAndRoutesAndCloseRemovesLink(t *testing.T) {
	ns := testNetns(t)
	h := nsHandle(t, ns)
	before := goleak.IgnoreCurrent()
	dev, err := openInNetns(t, ns, tun.Config{
		Name: "tgtun0", MTU: 1400,
		Addresses: []netip.Prefix{tunAddr4, tunAddr6},
		Routes:    []netip.Prefix{tunRoute},
	})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Name() != "tgtun0" || dev.MTU() != 1400 {
		t.Fatalf("Name, MTU = %q, %d; want tgtun0, 1400", dev.Name(), dev.MTU())
	}
	link, err := h.LinkByName("tgtun0")
	if err != nil {
		t.Fatalf("link not in netns: %v", err)
	}
	if link.Attrs().Index != dev.Index() || link.Attrs().Flags&net.FlagUp == 0 || link.Attrs().MTU != 1400 {
		t.Fatalf("link %+v: want index %d, up, mtu 1400", link.Attrs(), dev.Index())
	}
	checkAddresses(t, h, link)
	checkRoute(t, h, link)

	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.LinkByName("tgtun0"); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Fatalf("after Close, LinkByName = %v; want link not found", err)
	}
	goleak.VerifyNone(t, before)
}

func checkAddresses(t *testing.T, h *netlink.Handle, link netlink.Link) {
	t.Helper()
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("list addresses: %v", err)
	}
	found := map[netip.Prefix]int{}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		found[netip.PrefixFrom(ip.Unmap(), ones)] = a.Flags
	}
	if _, ok := found[tunAddr4]; !ok {
		t.Errorf("address %s missing; have %v", tunAddr4, found)
	}
	flags, ok := found[tunAddr6]
	if !ok {
		t.Errorf("address %s missing; have %v", tunAddr6, found)
	} else if flags&unix.IFA_F_NODAD == 0 || flags&unix.IFA_F_TENTATIVE != 0 {
		t.Errorf("address %s flags %#x: want NODAD, not tentative", tunAddr6, flags)
	}
}

func checkRoute(t *testing.T, h *netlink.Handle, link netlink.Link) {
	t.Helper()
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == tunRoute.String() {
			return
		}
	}
	t.Errorf("route %s via %s missing; have %v", tunRoute, link.Attrs().Name, routes)
}

func TestOpen_FailedStepIsNamedAndDeviceRemoved(t *testing.T) {
	ns := testNetns(t)
	h := nsHandle(t, ns)
	_, err := openInNetns(t, ns, tun.Config{
		Name:      "tgtun1",
		Addresses: []netip.Prefix{tunAddr4},
		Routes:    []netip.Prefix{tunRoute, tunRoute},
	})
	if err == nil || !strings.Contains(err.Error(), "tun: add route 198.19.5.0/24 via tgtun1") {
		t.Fatalf("Open = %v; want the duplicate route named", err)
	}
	if _, err := h.LinkByName("tgtun1"); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Fatalf("after failed Open, LinkByName = %v; want link not found", err)
	}
}

func TestLinux_ReadLoopAndWriterCarryUDPToAndFromKernelSocket(t *testing.T) {
	ns := testNetns(t)
	var conn *net.UDPConn
	dev, err := openInNetns(t, ns, tun.Config{
		Name: "tgtun0", MTU: 1500,
		Addresses: []netip.Prefix{tunAddr4, tunAddr6},
		Routes:    []netip.Prefix{tunRoute},
	})
	if err != nil {
		t.Fatal(err)
	}
	inNetns(t, ns, func() {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tunAddr4.Addr(), 0)))
	})
	if err != nil {
		t.Fatalf("listen in netns: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()

	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan []byte, 64)
	wait := runLoop(ctx, dev, func(pkts [][]byte) error {
		for _, p := range pkts {
			select {
			case got <- bytes.Clone(p):
			default: // other traffic (IPv6 router solicitations) may fill it
			}
		}
		return nil
	})
	defer func() {
		cancel()
		if err := wait(t); err != nil {
			t.Errorf("ReadLoop = %v, want nil on cancel", err)
		}
	}()

	if _, err := conn.WriteToUDPAddrPort([]byte("ping"), peerAddr4); err != nil {
		t.Fatalf("send to %s: %v", peerAddr4, err)
	}
	awaitUDP(t, got, local, peerAddr4, "ping")

	reply := withHeadroom(udpPacket(t, peerAddr4, local, []byte("pong")))
	if n, err := tun.NewWriter(dev).WritePackets([][]byte{reply}, tun.Headroom); n != 1 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	expectDatagrams(t, conn, "pong")

	t.Run("GSOSendIsSplitIntoSegments", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789"), 35)
		cmsg := udpSegmentCmsg(100)
		if _, _, err := conn.WriteMsgUDPAddrPort(payload, cmsg, peerAddr4); err != nil {
			t.Fatalf("send GSO datagram: %v", err)
		}
		for i := 0; i < len(payload); i += 100 {
			awaitUDP(t, got, local, peerAddr4, string(payload[i:min(i+100, len(payload))]))
		}
	})

	t.Run("BatchWithSpareCapacityArrivesInOrder", func(t *testing.T) {
		var bufs [][]byte
		for _, s := range []string{"pong0", "pong1", "pong2"} {
			b := withHeadroom(udpPacket(t, peerAddr4, local, []byte(s)))
			bufs = append(bufs, append(make([]byte, 0, 2048), b...)) // room to coalesce
		}
		before := slices.Clone(bufs)
		if n, err := tun.NewWriter(dev).WritePackets(bufs, tun.Headroom); n != 3 || err != nil {
			t.Fatalf("WritePackets = %d, %v", n, err)
		}
		for i := range bufs {
			if &bufs[i][0] != &before[i][0] || len(bufs[i]) != len(before[i]) {
				t.Fatalf("bufs[%d] was replaced or resized by the write", i)
			}
		}
		expectDatagrams(t, conn, "pong0", "pong1", "pong2")
	})
}

// expectDatagrams reads len(want) datagrams from peerAddr4 on conn.
func expectDatagrams(t *testing.T, conn *net.UDPConn, want ...string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for _, w := range want {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != w || from != peerAddr4 {
			t.Fatalf("socket got %q from %s, %v; want %q from %s", buf[:n], from, err, w, peerAddr4)
		}
	}
}

// udpSegmentCmsg asks the kernel to send a datagram as UDP GSO segments of
// size bytes.
func udpSegmentCmsg(size uint16) []byte {
	b := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return b
}

// awaitUDP waits for the IPv4 UDP packet src->dst with payload, skipping
// other packets, and checks its checksums.
func awaitUDP(t *testing.T, got <-chan []byte, src, dst netip.AddrPort, payload string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case p := <-got:
			f, ok := parseUDP4(p)
			if !ok || f.src != src || f.dst != dst {
				continue
			}
			if string(f.payload) != payload || !f.checksumOK {
				t.Fatalf("packet %s->%s payload %q checksum ok %v; want %q, valid", src, dst, f.payload, f.checksumOK, payload)
			}
			return
		case <-timeout:
			t.Fatalf("no UDP packet %s->%s read from the TUN", src, dst)
		}
	}
}
