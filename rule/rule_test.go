package rule

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func mustCompile(t testing.TB, rules []Rule, final string) *Set {
	t.Helper()
	s, err := Compile(rules, final, nil)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func tcpTo(dst, domain string) *Flow {
	return &Flow{Network: NetworkTCP, Src: netip.MustParseAddrPort("198.18.0.1:40000"), Dst: netip.MustParseAddrPort(dst), Domain: domain}
}

func TestMatch_FirstMatchWinsAndFinalOtherwise(t *testing.T) {
	s := mustCompile(t, []Rule{
		{DomainSuffix: []string{"example"}, Outbound: "proxy"},
		{Domain: []string{"blocked.example"}, Outbound: "reject"}, // shadowed by rule 0
		{IPCIDR: pfx("198.19.0.0/24"), Outbound: "direct"},
	}, "final")
	for _, c := range []struct {
		f    *Flow
		want Result
	}{
		{tcpTo("198.18.1.1:80", "www.example"), Result{"proxy", 0}},
		{tcpTo("198.18.1.1:80", "blocked.example"), Result{"proxy", 0}},
		{tcpTo("198.19.0.2:80", ""), Result{"direct", 2}},
		{tcpTo("198.19.0.2:80", "other.test"), Result{"direct", 2}},
		{tcpTo("198.18.1.1:80", "other.test"), Result{"final", -1}},
	} {
		if got := s.Match(c.f); got != c.want {
			t.Errorf("%+v: %+v, want %+v", *c.f, got, c.want)
		}
	}
}

func TestMatch_DomainSuffixBoundaries(t *testing.T) {
	s := mustCompile(t, []Rule{
		{DomainSuffix: []string{"example.com"}, Outbound: "a"},
		{DomainSuffix: []string{".sub.test"}, Outbound: "b"},
	}, "final")
	for d, want := range map[string]string{
		"example.com":      "a",
		"www.example.com":  "a",
		"a.b.example.com":  "a",
		"notexample.com":   "final",
		"example.com.evil": "final",
		"sub.test":         "final", // leading dot: subdomains only
		"x.sub.test":       "b",
		"com":              "final",
	} {
		if got := s.Match(tcpTo("198.18.1.1:443", d)).Outbound; got != want {
			t.Errorf("%q: %s, want %s", d, got, want)
		}
	}
}

func TestMatch_MatchersInOneRuleAreANDed(t *testing.T) {
	s := mustCompile(t, []Rule{{
		DomainSuffix: []string{"example"},
		Port:         []uint16{443},
		PortRange:    []PortRange{{8000, 8999}},
		Network:      NetworkTCP,
		SourceCIDR:   pfx("198.18.0.0/24"),
		Outbound:     "x",
	}}, "final")
	ok := tcpTo("198.19.0.2:443", "a.example")
	if got := s.Match(ok).Outbound; got != "x" {
		t.Fatalf("all matchers true: %s", got)
	}
	for name, mod := range map[string]func(*Flow){
		"other domain":  func(f *Flow) { f.Domain = "a.test" },
		"no domain":     func(f *Flow) { f.Domain = "" },
		"other port":    func(f *Flow) { f.Dst = netip.MustParseAddrPort("198.19.0.2:80") },
		"udp":           func(f *Flow) { f.Network = NetworkUDP },
		"other source":  func(f *Flow) { f.Src = netip.MustParseAddrPort("198.18.5.1:1000") },
		"range matches": func(f *Flow) { f.Dst = netip.MustParseAddrPort("198.19.0.2:8080") },
	} {
		f := *ok
		mod(&f)
		want := "final"
		if name == "range matches" {
			want = "x"
		}
		if got := s.Match(&f).Outbound; got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}

func TestMatch_KeywordCIDRv6AndGeneric(t *testing.T) {
	s := mustCompile(t, []Rule{
		{DomainKeyword: []string{"ads"}, Outbound: "reject"},
		{IPCIDR: pfx("2001:2:0:1::/64", "198.19.0.0/16"), Outbound: "v"},
		{Network: NetworkUDP, Port: []uint16{53}, Outbound: "dns"},
	}, "final")
	for _, c := range []struct {
		f    *Flow
		want string
	}{
		{tcpTo("198.18.1.1:80", "myads.test"), "reject"},
		{tcpTo("[2001:2:0:1::2]:80", ""), "v"},
		{tcpTo("[::ffff:198.19.3.3]:80", ""), "v"},
		{tcpTo("[2001:2:0:2::2]:80", ""), "final"},
		{&Flow{Network: NetworkUDP, Dst: netip.MustParseAddrPort("198.18.9.9:53")}, "dns"},
		{&Flow{Network: NetworkTCP, Dst: netip.MustParseAddrPort("198.18.9.9:53")}, "final"},
	} {
		if got := s.Match(c.f).Outbound; got != c.want {
			t.Errorf("%+v: %s, want %s", *c.f, got, c.want)
		}
	}
}

func TestMatch_DomainsAreCaseInsensitive(t *testing.T) {
	s := mustCompile(t, []Rule{{Domain: []string{"WWW.Example.test."}, Outbound: "a"}}, "final")
	if got := s.Match(tcpTo("198.18.1.1:80", NormalizeDomain("www.EXAMPLE.test."))).Outbound; got != "a" {
		t.Errorf("normalised domain: %s", got)
	}
}

func TestCompile_ReportsEveryProblemWithItsRule(t *testing.T) {
	_, err := Compile([]Rule{
		{Outbound: "direct"},
		{DomainSuffix: []string{"*.example"}, Outbound: "direct"},
		{IPCIDR: pfx("198.19.0.1/24"), Outbound: "direct"},
		{PortRange: []PortRange{{9, 1}}, Outbound: "direct"},
		{Domain: []string{"a.test"}, Outbound: "nowhere"},
		{Domain: []string{"a..test"}, Outbound: "direct"},
		{DomainKeyword: []string{""}, Outbound: "direct"},
		{Port: []uint16{80}},
	}, "gone", []string{"direct", "proxy"})
	want := []struct {
		rule  int
		field string
		msg   string
	}{
		{-1, "outbound", `"gone" is not an outbound`},
		{0, "rule", "has no matcher"},
		{1, "domain_suffix", "not *.example"},
		{2, "ip_cidr", "did you mean 198.19.0.0/24?"},
		{3, "port_range", "starts above its end"},
		{4, "outbound", `"nowhere" is not an outbound`},
		{5, "domain", "empty label"},
		{6, "domain_keyword", "empty keyword"},
		{7, "outbound", "is required"},
	}
	for _, w := range want {
		found := false
		for _, e := range unwrap(err) {
			var re *Error
			if errors.As(e, &re) && re.Rule == w.rule && re.Field == w.field && strings.Contains(re.Msg, w.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem for rule %d %s: ...%s...; got %v", w.rule, w.field, w.msg, err)
		}
	}
}

func unwrap(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// naive is the specification: rules in order, every matcher checked.
func naive(rules []Rule, final string, f *Flow) Result {
	for i, r := range rules {
		if naiveMatches(&r, f) {
			return Result{r.Outbound, i}
		}
	}
	return Result{final, -1}
}

func naiveMatches(r *Rule, f *Flow) bool {
	d := f.Domain
	dst := f.Dst.Addr().Unmap()
	if len(r.Domain) > 0 && !slices.ContainsFunc(r.Domain, func(x string) bool { return d != "" && NormalizeDomain(x) == d }) {
		return false
	}
	if len(r.DomainSuffix) > 0 && !slices.ContainsFunc(r.DomainSuffix, func(x string) bool { return suffixMatches(NormalizeDomain(x), d) }) {
		return false
	}
	if len(r.DomainKeyword) > 0 && !slices.ContainsFunc(r.DomainKeyword, func(x string) bool { return d != "" && strings.Contains(d, strings.ToLower(x)) }) {
		return false
	}
	if len(r.IPCIDR) > 0 && !slices.ContainsFunc(r.IPCIDR, func(p netip.Prefix) bool { return p.Contains(dst) }) {
		return false
	}
	if len(r.Port)+len(r.PortRange) > 0 {
		port := f.Dst.Port()
		if !slices.Contains(r.Port, port) && !slices.ContainsFunc(r.PortRange, func(pr PortRange) bool { return pr.Lo <= port && port <= pr.Hi }) {
			return false
		}
	}
	if r.Network != NetworkAny && r.Network != f.Network {
		return false
	}
	if len(r.SourceCIDR) > 0 && !slices.ContainsFunc(r.SourceCIDR, func(p netip.Prefix) bool { return p.Contains(f.Src.Addr().Unmap()) }) {
		return false
	}
	return true
}

// gen makes random rules and flows over small alphabets, so that matches,
// near misses and shadowing all happen often.
type gen struct{ r *rand.Rand }

var (
	labels  = []string{"a", "b", "ex", "test", "ads", "cdn"}
	v4bases = []string{"198.18.0.0", "198.18.4.0", "198.19.0.0", "198.19.128.0"}
)

func (g gen) domain() string {
	n := 1 + g.r.IntN(3)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = labels[g.r.IntN(len(labels))]
	}
	return strings.Join(parts, ".")
}

func (g gen) prefix() netip.Prefix {
	if g.r.IntN(4) == 0 {
		return netip.MustParsePrefix(fmt.Sprintf("2001:2:0:%x::/%d", g.r.IntN(4), 48+g.r.IntN(3)*8)).Masked()
	}
	base := netip.MustParseAddr(v4bases[g.r.IntN(len(v4bases))])
	p, _ := base.Prefix(15 + g.r.IntN(10))
	return p
}

func (g gen) rule() Rule {
	var r Rule
	for r.Outbound == "" || !hasMatcher(&r) {
		if g.r.IntN(3) == 0 {
			r.Domain = append(r.Domain, g.domain())
		}
		if g.r.IntN(3) == 0 {
			s := g.domain()
			if g.r.IntN(3) == 0 {
				s = "." + s
			}
			r.DomainSuffix = append(r.DomainSuffix, s)
		}
		if g.r.IntN(5) == 0 {
			r.DomainKeyword = append(r.DomainKeyword, labels[g.r.IntN(len(labels))])
		}
		if g.r.IntN(3) == 0 {
			r.IPCIDR = append(r.IPCIDR, g.prefix())
		}
		if g.r.IntN(5) == 0 {
			r.Port = append(r.Port, uint16(80+g.r.IntN(3)))
		}
		if g.r.IntN(6) == 0 {
			lo := uint16(79 + g.r.IntN(3))
			r.PortRange = append(r.PortRange, PortRange{lo, lo + uint16(g.r.IntN(2))})
		}
		if g.r.IntN(5) == 0 {
			r.Network = Network(1 + g.r.IntN(2))
		}
		if g.r.IntN(6) == 0 {
			r.SourceCIDR = append(r.SourceCIDR, netip.MustParsePrefix(fmt.Sprintf("198.18.0.%d/31", 2*g.r.IntN(2))))
		}
		r.Outbound = fmt.Sprintf("o%d", g.r.IntN(4))
	}
	return r
}

func hasMatcher(r *Rule) bool {
	return len(r.Domain)+len(r.DomainSuffix)+len(r.DomainKeyword)+len(r.IPCIDR)+len(r.Port)+len(r.PortRange)+len(r.SourceCIDR) > 0 || r.Network != NetworkAny
}

func (g gen) flow() *Flow {
	f := &Flow{Network: Network(1 + g.r.IntN(2))}
	if g.r.IntN(4) > 0 {
		f.Domain = g.domain()
	}
	var dst netip.Addr
	if g.r.IntN(4) == 0 {
		dst = netip.MustParseAddr(fmt.Sprintf("2001:2:0:%x::%x", g.r.IntN(4), g.r.IntN(9)))
	} else {
		b := netip.MustParseAddr(v4bases[g.r.IntN(len(v4bases))]).As4()
		b[2] += byte(g.r.IntN(3))
		b[3] = byte(g.r.IntN(256))
		dst = netip.AddrFrom4(b)
		if g.r.IntN(10) == 0 {
			dst = netip.AddrFrom16(dst.As16()) // IPv4-mapped
		}
	}
	f.Dst = netip.AddrPortFrom(dst, uint16(79+g.r.IntN(4)))
	f.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(g.r.IntN(4))}), 40000)
	return f
}

// TestMatch_AgreesWithTheSpecification compares the indexed Set with a
// linear scan of the rules on random rule lists and flows.
func TestMatch_AgreesWithTheSpecification(t *testing.T) {
	g := gen{rand.New(rand.NewPCG(1, 2))}
	for round := range 300 {
		rules := make([]Rule, 1+g.r.IntN(30))
		for i := range rules {
			rules[i] = g.rule()
		}
		s := mustCompile(t, rules, "final")
		for range 200 {
			f := g.flow()
			if got, want := s.Match(f), naive(rules, "final", f); got != want {
				t.Fatalf("round %d: flow %+v: %+v, want %+v\nrules: %+v", round, *f, got, want, rules)
			}
		}
	}
}

func TestMatch_DoesNotAllocate(t *testing.T) {
	rules, flows := benchRules(2000)
	s := mustCompile(t, rules, "final")
	i := 0
	if n := testing.AllocsPerRun(1000, func() { s.Match(&flows[i%len(flows)]); i++ }); n != 0 {
		t.Errorf("Match allocates %.1f times per call", n)
	}
}

// benchRules is a rule list shaped like real ones (mostly domain suffixes
// and prefixes, some exact domains, a few keywords and port rules), and
// flows of which about half match a rule.
func benchRules(n int) ([]Rule, []Flow) {
	r := rand.New(rand.NewPCG(7, 7))
	rules := make([]Rule, 0, n)
	var flows []Flow
	for i := range n {
		switch k := i % 100; {
		case k < 50:
			d := fmt.Sprintf("site%d.example%d", i, i%7)
			rules = append(rules, Rule{DomainSuffix: []string{d}, Outbound: "proxy"})
			flows = append(flows, Flow{Network: NetworkTCP, Domain: "www." + d, Dst: netip.MustParseAddrPort("198.18.3.3:443")})
		case k < 95:
			a := netip.AddrFrom4([4]byte{198, 18 + byte(i%2), byte(i >> 8), byte(i)})
			p, _ := a.Prefix(16 + r.IntN(17))
			rules = append(rules, Rule{IPCIDR: []netip.Prefix{p}, Outbound: "direct"})
			flows = append(flows, Flow{Network: NetworkTCP, Dst: netip.AddrPortFrom(a, 443)})
		case k < 98:
			d := fmt.Sprintf("host%d.test", i)
			rules = append(rules, Rule{Domain: []string{d}, Outbound: "reject"})
			flows = append(flows, Flow{Network: NetworkUDP, Domain: d, Dst: netip.MustParseAddrPort("198.19.9.9:443")})
		case k < 99:
			rules = append(rules, Rule{DomainKeyword: []string{fmt.Sprintf("kw%d", i)}, Outbound: "reject"})
		default:
			rules = append(rules, Rule{Network: NetworkUDP, Port: []uint16{uint16(1000 + i)}, Outbound: "direct"})
		}
	}
	for i := range len(flows) {
		// As many flows that match nothing: unknown names and addresses.
		flows = append(flows, Flow{Network: NetworkTCP, Domain: fmt.Sprintf("www.unknown%d.example", i), Dst: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 200, byte(i)}), 443)})
	}
	r.Shuffle(len(flows), func(i, j int) { flows[i], flows[j] = flows[j], flows[i] })
	return rules, flows
}

// BenchmarkMatch10k matches flows against 10,000 rules; ns/op is the time
// of one match (≥ 1M matches/s is ≤ 1000 ns/op).
func BenchmarkMatch10k(b *testing.B) {
	rules, flows := benchRules(10000)
	s := mustCompile(b, rules, "final")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Match(&flows[i%len(flows)])
		i++
	}
}

// BenchmarkLinear10k is the same list scanned rule by rule, for comparison.
func BenchmarkLinear10k(b *testing.B) {
	rules, flows := benchRules(10000)
	i := 0
	for b.Loop() {
		naive(rules, "final", &flows[i%len(flows)])
		i++
	}
}
