package autoroute

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	all4 = netip.MustParsePrefix("0.0.0.0/0")
	all6 = netip.MustParsePrefix("::/0")
)

func defaultConfig() Config {
	return Config{
		TUN:            "tungate0",
		TUNAddresses:   []netip.Prefix{netip.MustParsePrefix("198.18.0.1/15"), netip.MustParsePrefix("2001:2::1/64")},
		Table:          2022,
		Priority:       9000,
		Mark:           0x2022,
		Include:        []netip.Prefix{all4, all6},
		ExcludePrivate: true,
	}
}

func mustPlan(t *testing.T, cfg Config) *Plan {
	t.Helper()
	p, err := NewPlan(cfg)
	if err != nil {
		t.Fatalf("NewPlan: %v", err)
	}
	return p
}

// flow is what the kernel's rule walk looks at.
type flow struct {
	src   string // "" for a socket not bound yet
	dst   string
	uid   uint32
	mark  uint32
	proto string
	dport uint16
}

// captured walks p's rules as the kernel walks the rule list (rules in
// priority order; a goto jumps; a lookup in the table succeeds when one of
// its routes covers the destination) and reports whether the flow ends up
// in the TUN. Rules outside the plan (local, main) are not modelled: a
// flow leaving the block is "not captured".
func captured(t *testing.T, p *Plan, f flow) bool {
	t.Helper()
	dst := netip.MustParseAddr(f.dst)
	v6 := dst.Is6()
	src := netip.IPv4Unspecified()
	if v6 {
		src = netip.IPv6Unspecified()
	}
	if f.src != "" {
		src = netip.MustParseAddr(f.src)
	}
	hasSrc := f.src != "" || !v6
	skipTo := 0
	for _, r := range p.Rules {
		if r.IPv6 != v6 || r.Priority < skipTo || !r.matches(src, hasSrc, dst, f) {
			continue
		}
		switch r.Action {
		case Goto:
			skipTo = r.Goto
		case Nop:
		case Lookup:
			if route := p.lookup(dst); route != nil {
				return !route.Unreachable
			}
		}
	}
	return false
}

// matches is the kernel's rule match. An IPv6 rule with a source matches
// only a lookup that has one (fib6_rule_match without FIB_RULE_FIND_SADDR);
// an IPv4 one compares the source, 0.0.0.0 when there is none yet.
func (r *Rule) matches(src netip.Addr, hasSrc bool, dst netip.Addr, f flow) bool {
	return (r.Mark == 0 || r.Mark == f.mark) &&
		(!r.Src.IsValid() || hasSrc && r.Src.Contains(src)) &&
		(!r.Dst.IsValid() || r.Dst.Contains(dst)) &&
		(r.UIDRange == nil || r.UIDRange.Start <= f.uid && f.uid <= r.UIDRange.End) &&
		(r.IPProto == "" || r.IPProto == f.proto && r.Dport == f.dport)
}

// lookup is the longest-prefix match in the plan's table, the lowest
// metric first among equal prefixes.
func (p *Plan) lookup(dst netip.Addr) *Route {
	var best *Route
	for i := range p.Routes {
		r := &p.Routes[i]
		if !r.Dst.Contains(dst) {
			continue
		}
		if best == nil || r.Dst.Bits() > best.Dst.Bits() || r.Dst.Bits() == best.Dst.Bits() && r.Metric < best.Metric {
			best = r
		}
	}
	return best
}

func TestPlan_DefaultCapturesEverythingButPrivateAndLocal(t *testing.T) {
	p := mustPlan(t, defaultConfig())
	for _, c := range []struct {
		f    flow
		want bool
	}{
		{flow{dst: "198.19.0.2", uid: 1000}, true},
		{flow{dst: "2001:2:0:1::2", uid: 1000}, true},
		{flow{dst: "198.19.0.2", uid: 0, mark: 0x2022}, false}, // the gateway itself
		{flow{dst: "10.1.2.3"}, false},
		{flow{dst: "172.17.0.2"}, false},
		{flow{dst: "192.168.1.1", proto: "udp", dport: 53}, false}, // DNS to the router leaks unless strict
		{flow{dst: "169.254.169.254"}, false},
		{flow{dst: "224.0.0.251"}, false},
		{flow{dst: "255.255.255.255"}, false},
		{flow{dst: "fe80::1"}, false},
		{flow{dst: "fd00::1"}, false},
		{flow{dst: "ff02::1"}, false},
		{flow{dst: "127.0.0.53"}, false},
		{flow{dst: "::1"}, false},
		{flow{dst: "198.18.0.1"}, false}, // the TUN's own address
	} {
		if got := captured(t, p, c.f); got != c.want {
			t.Errorf("%+v: captured %v, want %v", c.f, got, c.want)
		}
	}
}

func TestPlan_OnlyNewSocketsAndTheTUNsFlowsAreCaptured(t *testing.T) {
	p := mustPlan(t, defaultConfig())
	for _, c := range []struct {
		f    flow
		want bool
	}{
		{flow{src: "198.18.0.1", dst: "198.19.0.2"}, true},        // a captured flow's later lookup
		{flow{src: "2001:2::1", dst: "2001:2:0:1::2"}, true},      // the same, IPv6
		{flow{src: "198.19.0.1", dst: "198.19.0.2"}, false},       // a reply from another interface's address
		{flow{src: "2001:2:0:1::1", dst: "2001:2:0:1::2"}, false}, // the same, IPv6
	} {
		if got := captured(t, p, c.f); got != c.want {
			t.Errorf("%+v: captured %v, want %v", c.f, got, c.want)
		}
	}
}

func TestPlan_FamilyWithoutTUNAddressIsRefused(t *testing.T) {
	cfg := defaultConfig()
	cfg.TUNAddresses = cfg.TUNAddresses[:1]
	if _, err := NewPlan(cfg); err == nil || !strings.Contains(err.Error(), "no IPv6 address") {
		t.Errorf("NewPlan with ::/0 and no IPv6 TUN address: %v", err)
	}
	cfg.Include = cfg.Include[:1]
	mustPlan(t, cfg)
}

func TestPlan_OtherMarksAreCaptured(t *testing.T) {
	p := mustPlan(t, defaultConfig())
	if !captured(t, p, flow{dst: "198.19.0.2", mark: 0x1}) {
		t.Error("a socket with another mark skipped the capture")
	}
}

func TestPlan_ExcludePrivateFalseCapturesPrivate(t *testing.T) {
	cfg := defaultConfig()
	cfg.ExcludePrivate = false
	p := mustPlan(t, cfg)
	if !captured(t, p, flow{dst: "10.1.2.3"}) {
		t.Error("10.1.2.3 not captured with exclude_private off")
	}
	if captured(t, p, flow{dst: "127.0.0.1"}) {
		t.Error("loopback captured with exclude_private off")
	}
}

func TestPlan_RouteExcludeBypasses(t *testing.T) {
	cfg := defaultConfig()
	cfg.Exclude = []netip.Prefix{netip.MustParsePrefix("198.19.0.5/32"), netip.MustParsePrefix("2001:2:0:1::5/128")}
	p := mustPlan(t, cfg)
	for dst, want := range map[string]bool{"198.19.0.5": false, "198.19.0.2": true, "2001:2:0:1::5": false, "2001:2:0:1::2": true} {
		if got := captured(t, p, flow{dst: dst}); got != want {
			t.Errorf("%s: captured %v, want %v", dst, got, want)
		}
	}
}

func TestPlan_IncludeLimitsCapture(t *testing.T) {
	cfg := defaultConfig()
	cfg.Include = []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24")}
	p := mustPlan(t, cfg)
	if !captured(t, p, flow{dst: "198.19.0.2"}) || captured(t, p, flow{dst: "198.18.5.5"}) {
		t.Error("include 198.19.0.0/24 does not capture exactly that prefix")
	}
	for _, r := range p.Rules {
		if r.IPv6 {
			t.Fatalf("an IPv4-only include installs IPv6 rule %s", r.command())
		}
	}
	if len(p.Routes) != 1 || p.Routes[0].Dst != cfg.Include[0] {
		t.Errorf("routes %+v, want one route for %s", p.Routes, cfg.Include[0])
	}
}

func TestPlan_ExcludeUIDBypasses(t *testing.T) {
	cfg := defaultConfig()
	cfg.ExcludeUID = []UIDRange{{1000, 1999}}
	p := mustPlan(t, cfg)
	if captured(t, p, flow{dst: "198.19.0.2", uid: 1500}) {
		t.Error("uid 1500 captured despite exclude_uid 1000-1999")
	}
	if !captured(t, p, flow{dst: "198.19.0.2", uid: 2000}) {
		t.Error("uid 2000 not captured")
	}
}

func TestPlan_IncludeUIDLimitsCapture(t *testing.T) {
	cfg := defaultConfig()
	cfg.IncludeUID = []UIDRange{{1000, 1000}, {2000, 2999}}
	p := mustPlan(t, cfg)
	for uid, want := range map[uint32]bool{0: false, 999: false, 1000: true, 1001: false, 2500: true, 3000: false} {
		if got := captured(t, p, flow{dst: "198.19.0.2", uid: uid}); got != want {
			t.Errorf("uid %d: captured %v, want %v", uid, got, want)
		}
	}
}

func TestPlan_StrictSendsDNSIntoTUNWhateverTheServer(t *testing.T) {
	cfg := defaultConfig()
	cfg.Strict = true
	p := mustPlan(t, cfg)
	for _, f := range []flow{
		{dst: "192.168.1.1", proto: "udp", dport: 53},
		{dst: "10.0.0.1", proto: "tcp", dport: 53},
		{dst: "fd00::53", proto: "udp", dport: 53},
	} {
		if !captured(t, p, f) {
			t.Errorf("strict: %+v not captured", f)
		}
	}
	if captured(t, p, flow{dst: "192.168.1.1", proto: "tcp", dport: 80}) {
		t.Error("strict captured non-DNS traffic to a private address")
	}
	if captured(t, p, flow{dst: "192.168.1.1", proto: "udp", dport: 53, mark: 0x2022}) {
		t.Error("strict captured the gateway's own DNS")
	}
}

func TestPlan_StrictExcludedUIDKeepsItsDNS(t *testing.T) {
	cfg := defaultConfig()
	cfg.Strict = true
	cfg.ExcludeUID = []UIDRange{{1000, 1000}}
	p := mustPlan(t, cfg)
	if captured(t, p, flow{dst: "192.168.1.1", proto: "udp", dport: 53, uid: 1000}) {
		t.Error("strict captured an excluded uid's DNS")
	}
}

func TestPlan_StrictFailsClosedWithoutTUN(t *testing.T) {
	cfg := defaultConfig()
	cfg.Strict = true
	p := mustPlan(t, cfg)
	// The kernel removes the routes via the TUN when it disappears; what
	// remains must be unreachable routes, behind the TUN's while it lives.
	var left []Route
	for _, r := range p.Routes {
		if r.Unreachable {
			left = append(left, r)
		}
	}
	alive := p.lookup(netip.MustParseAddr("198.19.0.2"))
	if alive == nil || alive.Unreachable {
		t.Fatalf("with the TUN up, lookup gives %+v, want the TUN route", alive)
	}
	p.Routes = left
	if captured(t, p, flow{dst: "198.19.0.2"}) {
		t.Fatal("model error: unreachable counted as captured")
	}
	if r := p.lookup(netip.MustParseAddr("198.19.0.2")); r == nil || !r.Unreachable {
		t.Errorf("without the TUN, lookup gives %+v, want unreachable (no leak)", r)
	}
	if r := p.lookup(netip.MustParseAddr("2001:2:0:1::2")); r == nil || !r.Unreachable {
		t.Errorf("IPv6 without the TUN: lookup gives %+v, want unreachable", r)
	}
}

func TestPlan_UpstreamProxyNeverCaptured(t *testing.T) {
	cfg := defaultConfig()
	cfg.Upstreams = []netip.Addr{netip.MustParseAddr("198.19.0.9"), netip.MustParseAddr("::ffff:198.19.0.10")}
	p := mustPlan(t, cfg)
	for _, dst := range []string{"198.19.0.9", "198.19.0.10"} {
		if captured(t, p, flow{dst: dst}) {
			t.Errorf("upstream proxy %s captured", dst)
		}
	}
}

func TestPlan_EveryRuleIsInTheBlockAndNamesTheTable(t *testing.T) {
	cfg := defaultConfig()
	cfg.Strict = true
	cfg.ExcludeUID = []UIDRange{{5, 6}}
	cfg.IncludeUID = []UIDRange{{7, 8}}
	cfg.Upstreams = []netip.Addr{netip.MustParseAddr("198.19.0.9")}
	p := mustPlan(t, cfg)
	nops := map[bool]int{}
	for _, r := range p.Rules {
		if r.Priority < cfg.Priority || r.Priority >= cfg.Priority+BlockSize {
			t.Errorf("%s: priority outside %d+%d", r.command(), cfg.Priority, BlockSize)
		}
		if r.Table != cfg.Table {
			t.Errorf("%s: table %d, want %d (ownership)", r.command(), r.Table, cfg.Table)
		}
		if r.Action == Nop {
			nops[r.IPv6] = r.Priority
		}
	}
	for _, r := range p.Rules {
		if r.Action == Goto && (r.Goto != nops[r.IPv6] || r.Goto <= r.Priority) {
			t.Errorf("%s: jumps to %d, want the block's end %d", r.command(), r.Goto, nops[r.IPv6])
		}
	}
	for i := 1; i < len(p.Rules); i++ {
		a, b := p.Rules[i-1], p.Rules[i]
		if a.IPv6 == b.IPv6 && a.Priority > b.Priority {
			t.Errorf("rules out of order: %s before %s", a.command(), b.command())
		}
	}
}

func TestPlan_RefusesWhatCannotWork(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"main table":     func(c *Config) { c.Table = 254 },
		"local table":    func(c *Config) { c.Table = 255 },
		"zero table":     func(c *Config) { c.Table = 0 },
		"priority 0":     func(c *Config) { c.Priority = 0 },
		"past main rule": func(c *Config) { c.Priority = 32760 },
		"no mark":        func(c *Config) { c.Mark = 0 },
		"no include":     func(c *Config) { c.Include = nil },
		"no tun":         func(c *Config) { c.TUN = "" },
	} {
		cfg := defaultConfig()
		mod(&cfg)
		if _, err := NewPlan(cfg); err == nil {
			t.Errorf("%s: NewPlan accepted it", name)
		}
	}
}

func TestPlan_StringIsIPCommands(t *testing.T) {
	cfg := defaultConfig()
	cfg.Strict = true
	cfg.ExcludeUID = []UIDRange{{1000, 1999}}
	s := mustPlan(t, cfg).String()
	for _, want := range []string{
		"ip -4 rule add priority 9000 fwmark 0x2022 goto 9009 table 2022 protocol 116",
		"ip -6 rule add priority 9000 fwmark 0x2022 goto 9009 table 2022 protocol 116",
		"ip -4 rule add priority 9001 uidrange 1000-1999 goto 9009 table 2022 protocol 116",
		"ip -4 rule add priority 9002 to 127.0.0.0/8 goto 9009 table 2022 protocol 116",
		"ip -4 rule add priority 9002 to 198.18.0.1/32 goto 9009 table 2022 protocol 116",
		"ip -4 rule add priority 9003 ipproto udp dport 53 lookup 2022 protocol 116",
		"ip -4 rule add priority 9004 to 10.0.0.0/8 goto 9009 table 2022 protocol 116",
		"ip -6 rule add priority 9004 to fc00::/7 goto 9009 table 2022 protocol 116",
		"ip -4 rule add priority 9005 from 0.0.0.0/32 lookup 2022 protocol 116",
		"ip -4 rule add priority 9005 from 198.18.0.1/32 lookup 2022 protocol 116",
		"ip -6 rule add priority 9005 from 2001:2::1/128 lookup 2022 protocol 116",
		"ip -6 rule add priority 9006 from ::/1 goto 9009 table 2022 protocol 116",
		"ip -6 rule add priority 9006 from 8000::/1 goto 9009 table 2022 protocol 116",
		"ip -6 rule add priority 9007 lookup 2022 protocol 116",
		"ip -4 rule add priority 9009 nop table 2022 protocol 116",
		"ip -4 route add 0.0.0.0/0 dev tungate0 table 2022 protocol 116",
		"ip -6 route add ::/0 dev tungate0 table 2022 protocol 116",
		"ip -4 route add unreachable 0.0.0.0/0 table 2022 metric 4294967295 protocol 116",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("plan lacks %q:\n%s", want, s)
		}
	}
}
