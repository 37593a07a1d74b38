package gvisor

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/nettest"
)

func TestConn_PassesNettest(t *testing.T) {
	handler, conns := acceptAll(t)
	h := newHarness(t, handler, DefaultOptions())
	port := uint16(1000)
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		port++
		sc, cc := connect(t, h, conns, netip.AddrPortFrom(serverV4, port))
		stop = func() {
			_ = sc.Close()
			_ = cc.Close()
		}
		return sc, cc, stop, nil
	})
}
