package rule

import (
	"net/netip"
	"slices"
	"strings"
)

// dim is the matcher a rule is indexed by.
type dim uint8

const (
	dimNone    dim = iota // no indexable matcher: checked for every flow
	dimDomain             // Domain, in Set.exact
	dimSuffix             // DomainSuffix, in Set.suffix / Set.subOnly
	dimCIDR               // IPCIDR, in Set.cidr
	dimKeyword            // DomainKeyword, in Set.keywords
)

// compiled is a rule in the form Match checks.
type compiled struct {
	primary  dim
	domain   []string
	suffix   []string // "example.com" matches itself and below, ".example.com" only below
	keyword  []string
	cidr     []netip.Prefix
	ports    []uint16
	ranges   []PortRange
	network  Network
	source   []netip.Prefix
	outbound string
}

// Set is a compiled rule list. Its methods are safe for concurrent use.
type Set struct {
	rules []compiled
	final string

	// Rule indices by the value of each rule's primary matcher, each list
	// in rule order.
	names    map[string]*nameRules // domain and domain_suffix, by name
	keywords []keywordRules
	kwa      *keywordAutomaton // over keywords; nil without any
	cidr     [2]prefixTrie     // IPv4, IPv6
	generic  []int32           // rules without an indexable matcher
}

// nameRules are the rules indexed under one name.
type nameRules struct {
	exact   []int32 // domain: the name itself
	suffix  []int32 // domain_suffix: the name and its subdomains
	subOnly []int32 // domain_suffix with a leading dot: subdomains only
}

type keywordRules struct {
	keyword string
	rules   []int32
}

// prefixTrie finds the rules whose prefixes contain an address: a binary
// trie over the address bits, rules at the node of each prefix, so a
// lookup walks at most one node per bit of the address, rather than
// probing a table per prefix length.
type prefixTrie struct {
	nodes []trieNode // nodes[0] is the root (/0)
}

type trieNode struct {
	child [2]int32 // 0: none (the root is nobody's child)
	rules []int32
}

func newSet(final string) *Set {
	return &Set{
		final: final,
		names: map[string]*nameRules{},
	}
}

// Len is the number of rules.
func (s *Set) Len() int { return len(s.rules) }

// Final is the outbound of flows no rule matches.
func (s *Set) Final() string { return s.final }

func (s *Set) add(i int, r *Rule) error {
	if err := check(i, r); err != nil {
		return err
	}
	c := compiled{
		domain:   mapSlice(r.Domain, NormalizeDomain),
		suffix:   mapSlice(r.DomainSuffix, NormalizeDomain),
		keyword:  mapSlice(r.DomainKeyword, strings.ToLower),
		cidr:     r.IPCIDR,
		ports:    r.Port,
		ranges:   r.PortRange,
		network:  r.Network,
		source:   r.SourceCIDR,
		outbound: r.Outbound,
	}
	idx := int32(i)
	switch {
	case len(c.domain) > 0:
		c.primary = dimDomain
		for _, d := range c.domain {
			n := s.name(d)
			n.exact = appendOnce(n.exact, idx)
		}
	case len(c.suffix) > 0:
		c.primary = dimSuffix
		for _, d := range c.suffix {
			if sub, ok := strings.CutPrefix(d, "."); ok {
				n := s.name(sub)
				n.subOnly = appendOnce(n.subOnly, idx)
			} else {
				n := s.name(d)
				n.suffix = appendOnce(n.suffix, idx)
			}
		}
	case len(c.cidr) > 0:
		c.primary = dimCIDR
		for _, p := range c.cidr {
			s.cidr[family(p.Addr())].add(p, idx)
		}
	case len(c.keyword) > 0:
		c.primary = dimKeyword
		for _, k := range c.keyword {
			j := slices.IndexFunc(s.keywords, func(kr keywordRules) bool { return kr.keyword == k })
			if j < 0 {
				s.keywords = append(s.keywords, keywordRules{keyword: k})
				j = len(s.keywords) - 1
			}
			s.keywords[j].rules = appendOnce(s.keywords[j].rules, idx)
		}
	default:
		s.generic = append(s.generic, idx)
	}
	s.rules = append(s.rules, c)
	return nil
}

func (s *Set) name(d string) *nameRules {
	n := s.names[d]
	if n == nil {
		n = &nameRules{}
		s.names[d] = n
	}
	return n
}

// finish builds the keyword automaton and orders the prefix lengths,
// longest first.
func (s *Set) finish() {
	if len(s.keywords) > 0 {
		s.kwa = buildKeywords(s.keywords)
	}
}

func (t *prefixTrie) add(p netip.Prefix, idx int32) {
	if len(t.nodes) == 0 {
		t.nodes = []trieNode{{}}
	}
	a := p.Addr().AsSlice()
	n := int32(0)
	for i := range p.Bits() {
		b := a[i/8] >> (7 - i%8) & 1
		if t.nodes[n].child[b] == 0 {
			t.nodes = append(t.nodes, trieNode{})
			t.nodes[n].child[b] = int32(len(t.nodes) - 1)
		}
		n = t.nodes[n].child[b]
	}
	t.nodes[n].rules = appendOnce(t.nodes[n].rules, idx)
}

// scan returns the first rule before best, among those whose prefix
// contains a, that matches f; or best.
func (t *prefixTrie) scan(s *Set, a netip.Addr, f *Flow, best int32) int32 {
	if len(t.nodes) == 0 {
		return best
	}
	raw := a.As16()
	bytes := raw[:]
	if a.Is4() {
		bytes = raw[12:]
	}
	n := int32(0)
	for i := 0; ; i++ {
		best = s.scan(t.nodes[n].rules, f, best)
		if i == len(bytes)*8 {
			return best
		}
		n = t.nodes[n].child[bytes[i/8]>>(7-i%8)&1]
		if n == 0 {
			return best
		}
	}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func appendOnce(list []int32, idx int32) []int32 {
	if n := len(list); n > 0 && list[n-1] == idx {
		return list
	}
	return append(list, idx)
}

func mapSlice(in []string, f func(string) string) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}

// Match returns the outbound for f: that of the first rule all of whose
// matchers match, or the final outbound. It does not allocate.
func (s *Set) Match(f *Flow) Result {
	best := int32(len(s.rules)) // no match yet
	if d := f.Domain; d != "" {
		if n := s.names[d]; n != nil {
			best = s.scan(n.exact, f, best)
			best = s.scan(n.suffix, f, best)
		}
		for j := strings.IndexByte(d, '.'); j >= 0; {
			sfx := d[j+1:]
			if n := s.names[sfx]; n != nil {
				best = s.scan(n.suffix, f, best)
				best = s.scan(n.subOnly, f, best)
			}
			k := strings.IndexByte(sfx, '.')
			if k < 0 {
				break
			}
			j += k + 1
		}
		if a := s.kwa; a != nil {
			state := int32(0)
			for i := 0; i < len(d); i++ {
				state = a.next[int(state)*a.cols+int(a.class[d[i]])]
				for _, k := range a.out[state] {
					best = s.scan(s.keywords[k].rules, f, best)
				}
			}
		}
	}
	if dst := f.Dst.Addr().Unmap(); dst.IsValid() {
		best = s.cidr[family(dst)].scan(s, dst, f, best)
	}
	best = s.scan(s.generic, f, best)
	if int(best) == len(s.rules) {
		return Result{Outbound: s.final, Rule: -1}
	}
	return Result{Outbound: s.rules[best].outbound, Rule: int(best)}
}

// scan returns the first rule of list before best that matches f in full,
// or best.
func (s *Set) scan(list []int32, f *Flow, best int32) int32 {
	for _, i := range list {
		if i >= best {
			break
		}
		if s.rules[i].matches(f) {
			return i
		}
	}
	return best
}

// matches checks every matcher of c except its primary one, which the
// index already matched.
func (c *compiled) matches(f *Flow) bool {
	if c.network != NetworkAny && c.network != f.Network {
		return false
	}
	if (len(c.ports) > 0 || len(c.ranges) > 0) && !c.portMatches(f.Dst.Port()) {
		return false
	}
	if len(c.source) > 0 && !anyContains(c.source, f.Src.Addr().Unmap()) {
		return false
	}
	if c.primary != dimDomain && len(c.domain) > 0 && !slices.Contains(c.domain, f.Domain) {
		return false
	}
	if c.primary != dimSuffix && len(c.suffix) > 0 && !slices.ContainsFunc(c.suffix, func(sfx string) bool { return suffixMatches(sfx, f.Domain) }) {
		return false
	}
	if c.primary != dimKeyword && len(c.keyword) > 0 && !slices.ContainsFunc(c.keyword, func(k string) bool { return f.Domain != "" && strings.Contains(f.Domain, k) }) {
		return false
	}
	if c.primary != dimCIDR && len(c.cidr) > 0 && !anyContains(c.cidr, f.Dst.Addr().Unmap()) {
		return false
	}
	return true
}

func (c *compiled) portMatches(port uint16) bool {
	if slices.Contains(c.ports, port) {
		return true
	}
	for _, r := range c.ranges {
		if r.Lo <= port && port <= r.Hi {
			return true
		}
	}
	return false
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// suffixMatches reports whether domain d matches suffix sfx (see
// Rule.DomainSuffix).
func suffixMatches(sfx, d string) bool {
	if d == "" {
		return false
	}
	if sub, ok := strings.CutPrefix(sfx, "."); ok {
		return strings.HasSuffix(d, "."+sub)
	}
	return d == sfx || strings.HasSuffix(d, "."+sfx)
}
