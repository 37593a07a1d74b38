package config

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const routeYAML = `outbounds:
  - name: proxy
    kind: socks5
    address: 198.19.0.5:1080
    username: u
    password: secret
  - name: corp
    kind: http
    address: proxy.corp.test:3128
    connect_timeout: 3s
route:
  rules:
    - ip_cidr: [198.19.0.0/24, "2001:2:0:1::/64"]
      port: [443, 8443]
      outbound: proxy
    - network: udp
      port_range: ["5000-6000"]
      source_cidr: [198.18.0.0/15]
      outbound: reject
  final: direct
`

func TestLoad_OutboundsAndRules(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{File: writeConfig(t, routeYAML)})
	want := []Outbound{
		{Name: "proxy", Kind: UpstreamSOCKS5, Address: "198.19.0.5:1080", Username: "u", Password: "secret"},
		{Name: "corp", Kind: UpstreamHTTP, Address: "proxy.corp.test:3128", ConnectTimeout: 3 * time.Second},
	}
	if !reflect.DeepEqual(cfg.Outbounds, want) {
		t.Errorf("outbounds = %+v\nwant %+v", cfg.Outbounds, want)
	}
	if len(cfg.Route.Rules) != 2 || cfg.Route.Final != OutboundDirect {
		t.Fatalf("route = %+v", cfg.Route)
	}
	r := cfg.Route.Rules[0]
	if !reflect.DeepEqual(r.IPCIDR, prefixes("198.19.0.0/24", "2001:2:0:1::/64")) || !reflect.DeepEqual(r.Port, []uint16{443, 8443}) {
		t.Errorf("rule 0 = %+v", r)
	}
	set, err := cfg.RuleSet()
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 2 || set.Final() != OutboundDirect {
		t.Errorf("rule set: %d rules, final %s", set.Len(), set.Final())
	}
	if up := cfg.Outbounds[1].Upstream(cfg.Upstream.ConnectTimeout); up.ConnectTimeout != 3*time.Second {
		t.Errorf("corp connect timeout %v", up.ConnectTimeout)
	}
	if up := cfg.Outbounds[0].Upstream(cfg.Upstream.ConnectTimeout); up.ConnectTimeout != cfg.Upstream.ConnectTimeout {
		t.Errorf("proxy connect timeout %v, want upstream's %v", up.ConnectTimeout, cfg.Upstream.ConnectTimeout)
	}
}

func TestWriteYAML_OutboundsAndRulesRoundTrip(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{File: writeConfig(t, routeYAML)})
	var buf bytes.Buffer
	if err := cfg.WriteYAML(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), `"secret"`) {
		t.Errorf("an outbound's password is printed:\n%s", buf.String())
	}
	back := mustLoad(t, LoadOptions{File: writeConfig(t, buf.String())})
	cfg.Outbounds[0].Password = Redacted
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v\n%s", back, cfg, buf.String())
	}
}

func TestLoad_RouteProblemsNameTheirKeys(t *testing.T) {
	_, err := Load(LoadOptions{File: writeConfig(t, `outbounds:
  - name: proxy
    kind: socks5
    adress: 198.19.0.5:1080
  - name: direct
    kind: direct
  - kind: http
    address: 198.19.0.5:3128
route:
  rules:
    - ip_cidr: [198.19.0.1/24]
      outbound: proxy
    - outbound: nowhere
      port: [99999]
    - domain_suffix: [example]
      outbound: proxy
    - network: sctp
      outbound: reject
    - port: [80]
      outbound: nowhere
    - port_range: ["9-1"]
      outbound: direct
  final: gone
`), Environ: []string{}})
	want := map[string]string{
		"outbounds[0]":              "invalid keys: adress",
		"outbounds[1].name":         `"direct" is already a built-in outbound`,
		"outbounds[2].name":         "is required",
		"route.rules[0].ip_cidr":    "did you mean 198.19.0.0/24?",
		"route.rules[1].port[0]":    "out of range",
		"route.rules[2]":            "domain matchers need dns.hijack or route.sniff",
		"route.rules[3].network":    `"sctp" is not one of tcp, udp`,
		"route.rules[4].outbound":   `"nowhere" is not an outbound`,
		"route.rules[5].port_range": "starts above its end",
		"route.final":               `"gone" is not an outbound`,
	}
	got := map[string]string{}
	for _, p := range problemList(t, err) {
		got[p.Key] += p.Message + "; "
	}
	for key, msg := range want {
		if !strings.Contains(got[key], msg) {
			t.Errorf("%s: got %q, want ...%s...", key, got[key], msg)
		}
	}
	if _, ok := got["route.rules[3]"]; ok {
		t.Errorf("a rule that did not convert also got %q", got["route.rules[3]"])
	}
}

func TestLoad_MappingListsRefuseTheEnvironment(t *testing.T) {
	_, err := Load(LoadOptions{Environ: []string{"TUNGATE_OUTBOUNDS=proxy"}})
	ps := problemList(t, err)
	if len(ps) != 1 || ps[0].Key != "outbounds" || !strings.Contains(ps[0].Message, "config file") || ps[0].Source != "TUNGATE_OUTBOUNDS" {
		t.Errorf("problems %+v", ps)
	}
}

func problemList(t *testing.T, err error) []Problem {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %T %v, want *Error", err, err)
	}
	return e.Problems
}

// TestExamples_Load: every example in configs/ is a valid configuration.
func TestExamples_Load(t *testing.T) {
	paths, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(paths) < 2 {
		t.Fatalf("examples %v (%v)", paths, err)
	}
	for _, p := range paths {
		cfg, err := Load(LoadOptions{File: p, Environ: []string{}})
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if filepath.Base(p) == "vpn.yaml" && (!cfg.TUN.AutoRoute || !cfg.DNS.Hijack || len(cfg.Route.Rules) != 2 || cfg.Route.Final != OutboundDirect) {
			t.Errorf("vpn.yaml loads as %+v", cfg)
		}
	}
}
