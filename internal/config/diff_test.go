package config

import (
	"reflect"
	"testing"
	"time"
)

func TestChanged_ListsTheKeysThatDiffer(t *testing.T) {
	a, b := Default(), Default()
	if got := Changed(a, b); len(got) != 0 {
		t.Fatalf("Changed of equal configs = %v", got)
	}
	b.TUN.MTU = 9000
	b.Route.Rules = []Rule{{Port: []uint16{25}, Outbound: OutboundReject}}
	b.Proxy.IdleTimeout = time.Minute
	b.Log.Level = "debug"
	want := []string{"tun.mtu", "route.rules", "proxy.idle_timeout", "log.level"}
	if got := Changed(a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
}

func TestNeedsRestart(t *testing.T) {
	for key, want := range map[string]bool{
		"tun.mtu": true, "tun.auto_route": true, "stack.kind": true, "stack.custom.sack": true,
		"api.listen": true, "upstream.fwmark": true, "dns.fake_ip_range": true, "dns.hijack": true,
		"route.rules": false, "outbounds": false, "upstream.address": false, "proxy.max_connections": false,
		"dns.servers": false, "log.level": false, "api.secret": false, "udp.max_sessions": false,
	} {
		if got := NeedsRestart(key); got != want {
			t.Errorf("NeedsRestart(%q) = %v, want %v", key, got, want)
		}
	}
}
