package proxy

import (
	"encoding/binary"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// setRecvErr asks for ICMP errors on the unconnected socket behind c: an
// unconnected UDP socket hears of them only with IP_RECVERR (ip(7)); the
// socket is IPv6 with IPv4-mapped destinations, so both options.
func setRecvErr(c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if e := unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVERR, 1); e != nil && e != unix.ENOPROTOOPT {
			serr = e
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_RECVERR, 1); e != nil && e != unix.ENOPROTOOPT {
			serr = e
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// drainErrors reads the socket's error queue (MSG_ERRQUEUE, without
// blocking and without taking the read lock a pending ReadFrom holds) and
// reports every port unreachable by the destination of the datagram that
// caused it, which the kernel gives as the message's address.
func (u *directPacket) drainErrors() {
	var found []netip.AddrPort
	_ = u.rc.Control(func(fd uintptr) {
		var data [64]byte
		oob := make([]byte, 512)
		for range 64 { // bounded: the queue is bounded too, and an error keeps arriving under a flood
			_, oobn, _, from, err := unix.Recvmsg(int(fd), data[:], oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			if refused(oob[:oobn]) {
				if ap, ok := sockaddrAddrPort(from); ok {
					found = append(found, ap)
				}
			}
		}
	})
	if u.unreachable == nil {
		return
	}
	for _, ap := range found {
		u.unreachable(ap)
	}
}

// refused reports whether the control messages hold a sock_extended_err
// (linux/errqueue.h) saying ECONNREFUSED: an ICMP or ICMPv6 port
// unreachable.
func refused(oob []byte) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for _, m := range msgs {
		ip4 := m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_RECVERR
		ip6 := m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_RECVERR
		if (ip4 || ip6) && len(m.Data) >= 4 && syscall.Errno(binary.NativeEndian.Uint32(m.Data)) == syscall.ECONNREFUSED {
			return true
		}
	}
	return false
}

func sockaddrAddrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port)), true
	}
	return netip.AddrPort{}, false
}
