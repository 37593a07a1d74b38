package proxy_test

import (
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
)

func TestConnections_ListsARelayWithItsBytesAndRoute(t *testing.T) {
	bothRelays(t, testConnections_ListsARelayWithItsBytesAndRoute)
}

func testConnections_ListsARelayWithItsBytesAndRoute(t *testing.T) {
	h := newHarness(t, proxy.Options{Router: func(stack.FlowID, string) proxy.Route {
		return proxy.Route{Outbound: "direct", Rule: 2, Dialer: proxy.NewDirect(proxy.DirectOptions{}), Domain: "example.test"}
	}})
	app, up, done := h.establish()
	transfer(t, app, up, "hello")
	transfer(t, up, app, "a longer reply")
	h.clock.Advance(3 * time.Second)
	cs := waitConnections(t, h.p, 1, func(c proxy.ConnInfo) bool { return c.Up == 5 && c.Down == 14 })
	c := cs[0]
	if c.ID == 0 || c.Network != "tcp" || c.Outbound != "direct" || c.Rule != 2 || c.Domain != "example.test" {
		t.Errorf("connection = %+v, want tcp via direct by rule 2 for example.test", c)
	}
	if c.Flow.Dst.String() != up.LocalAddr().String() {
		t.Errorf("destination %v, want the upstream listener %v", c.Flow.Dst, up.LocalAddr())
	}
	if ev, _ := h.events.first(proxy.EventRoute); ev.Conn != c.ID {
		t.Errorf("route event names connection %d, want the listed %d", ev.Conn, c.ID)
	}
	if c.Age != 3*time.Second {
		t.Errorf("age %v, want 3s on the manual clock", c.Age)
	}
	app.Close()
	up.Close()
	waitClosed(t, done, "relay end")
	if cs := h.p.Connections(); len(cs) != 0 {
		t.Errorf("after the relay ended: %+v, want none", cs)
	}
}

func TestCloseConnection_ResetsBothSides(t *testing.T) {
	bothRelays(t, testCloseConnection_ResetsBothSides)
}

func testCloseConnection_ResetsBothSides(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app, up, done := h.establish()
	transfer(t, up, app, "downloading")
	cs := waitConnections(t, h.p, 1, nil)
	if h.p.CloseConnection(cs[0].ID + 1000) {
		t.Error("CloseConnection of an unknown id reported true")
	}
	if !h.p.CloseConnection(cs[0].ID) {
		t.Fatal("CloseConnection of the open flow reported false")
	}
	wantReset(t, app, "app")
	wantReset(t, up, "upstream")
	waitClosed(t, done, "relay end")
	if s := h.p.Stats(); s.ClosedByAPI != 1 {
		t.Errorf("ClosedByAPI = %d, want 1", s.ClosedByAPI)
	}
	if h.p.CloseConnection(cs[0].ID) {
		t.Error("CloseConnection of an ended flow reported true")
	}
}

func TestCloseAllConnections_EndsEveryRelay(t *testing.T) {
	h := newHarness(t, proxy.Options{})
	app1, _, done1 := h.establish()
	app2, _, done2 := h.establish()
	waitConnections(t, h.p, 2, nil)
	if n := h.p.CloseAllConnections(); n != 2 {
		t.Errorf("CloseAllConnections = %d, want 2", n)
	}
	wantReset(t, app1, "app 1")
	wantReset(t, app2, "app 2")
	waitClosed(t, done1, "relay 1 end")
	waitClosed(t, done2, "relay 2 end")
}

// waitConnections waits until p lists n flows that all satisfy ok (nil:
// any) and returns them.
func waitConnections(t *testing.T, p *proxy.Proxy, n int, ok func(proxy.ConnInfo) bool) []proxy.ConnInfo {
	t.Helper()
	giveUp := time.Now().Add(waitLimit)
	for {
		cs := p.Connections()
		good := len(cs) == n
		for _, c := range cs {
			good = good && (ok == nil || ok(c))
		}
		if good {
			return cs
		}
		if time.Now().After(giveUp) {
			t.Fatalf("connections = %+v, want %d matching", cs, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConnections_ListsUDPFlowsAndClosesOne(t *testing.T) {
	a := mirror(t)
	for _, nat := range []proxy.NATMode{proxy.NATFullCone, proxy.NATSymmetric} {
		t.Run(nat.String(), func(t *testing.T) {
			h := newHarness(t, proxy.Options{UDPNAT: nat, UDPDialer: proxy.NewDirect(proxy.DirectOptions{})})
			_, sock, done := h.handleFlow(appAddr, a.LocalAddr().String(), []byte("mapped?"))
			reply := readDatagram(t, sock)
			cs := waitConnections(t, h.p, 1, func(c proxy.ConnInfo) bool { return c.Up == 7 && c.Down == uint64(len(reply)) })
			if c := cs[0]; c.Network != "udp" || c.Up != 7 || c.Flow.Src != appAddr || c.Flow.Dst.String() != a.LocalAddr().String() {
				t.Errorf("connection = %+v, want udp %v → %v with 7 bytes up", c, appAddr, a.LocalAddr())
			}
			if !h.p.CloseConnection(cs[0].ID) {
				t.Fatal("CloseConnection reported false")
			}
			waitClosed(t, done, "flow end")
			if cs := h.p.Connections(); len(cs) != 0 {
				t.Errorf("after close: %+v, want none", cs)
			}
		})
	}
}
