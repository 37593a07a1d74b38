package config

import (
	"net/netip"
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

func TestWithRestartOnly_KeepsEveryRestartKeyAndTakesTheRest(t *testing.T) {
	cur, next := Default(), Default()
	next.TUN.MTU = 9000
	next.TUN.Addresses = prefixes("198.18.0.1/16")
	next.Stack.Custom.SACK = false
	next.Upstream.Fwmark = 7
	next.API.Listen = "127.0.0.1:9999"
	next.DNS.FakeIPRange = netip.MustParsePrefix("198.18.64.0/18")
	next.Log.Format = LogJSON
	next.Log.Level = "debug"
	next.Proxy.IdleTimeout = time.Minute
	next.API.Secret = "new"
	k := WithRestartOnly(cur, next)
	for _, key := range Changed(cur, k) {
		if NeedsRestart(key) {
			t.Errorf("%s changed although it needs a restart", key)
		}
	}
	if got, want := Changed(cur, k), []string{"proxy.idle_timeout", "api.secret", "log.level"}; !reflect.DeepEqual(got, want) {
		t.Errorf("applied %v, want %v", got, want)
	}
	if next.TUN.MTU != 9000 {
		t.Error("next was modified")
	}
}
