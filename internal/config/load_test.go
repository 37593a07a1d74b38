package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parsedFlags returns a flag set with RegisterFlags' flags parsed from args.
func parsedFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return fs
}

func mustLoad(t *testing.T, opts LoadOptions) *Config {
	t.Helper()
	if opts.Environ == nil {
		opts.Environ = []string{}
	}
	cfg, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

// loadProblems loads opts, expecting an *Error, and returns its problems.
func loadProblems(t *testing.T, opts LoadOptions) []Problem {
	t.Helper()
	if opts.Environ == nil {
		opts.Environ = []string{}
	}
	cfg, err := Load(opts)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Load = %v, %v; want an *Error", cfg, err)
	}
	if cfg != nil {
		t.Fatalf("Load returned a config with its error")
	}
	return e.Problems
}

func requireProblem(t *testing.T, ps []Problem, key, message string) Problem {
	t.Helper()
	for _, p := range ps {
		if p.Key == key && strings.Contains(p.Message, message) {
			return p
		}
	}
	t.Fatalf("want a problem %s: ...%s..., got %q", key, message, ps)
	return Problem{}
}

func TestLoad_NothingSetGivesDefaults(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{Flags: parsedFlags(t)})
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("got %+v, want Default()", cfg)
	}
}

func TestLoad_FileOverridesDefault(t *testing.T) {
	path := writeConfig(t, "tun:\n  mtu: 9000\nstack:\n  gvisor:\n    sack: false\n")
	cfg := mustLoad(t, LoadOptions{File: path})
	want := Default()
	want.TUN.MTU = 9000
	want.Stack.GVisor.SACK = false
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v, want %+v", cfg, want)
	}
}

func TestLoad_EnvOverridesFile(t *testing.T) {
	path := writeConfig(t, "tun:\n  mtu: 9000\n  name: fromfile\nupstream:\n  connect_timeout: 3s\n")
	cfg := mustLoad(t, LoadOptions{File: path, Environ: []string{
		"TUNGATE_TUN_MTU=1400",
		"TUNGATE_UPSTREAM_CONNECT_TIMEOUT=750ms",
		"TUNGATE_STACK_KIND=custom",
		"TUNGATE_STACK_GVISOR_RECEIVE_BUFFER_SIZE=0x10000",
		"UNRELATED=1",
	}})
	if cfg.TUN.MTU != 1400 || cfg.Upstream.ConnectTimeout != 750*time.Millisecond || cfg.Stack.Kind != StackCustom {
		t.Fatalf("env did not override: mtu %d, connect_timeout %v, stack %q", cfg.TUN.MTU, cfg.Upstream.ConnectTimeout, cfg.Stack.Kind)
	}
	if cfg.Stack.GVisor.ReceiveBufferSize != 0x10000 {
		t.Fatalf("receive_buffer_size = %d, want %d", cfg.Stack.GVisor.ReceiveBufferSize, 0x10000)
	}
	if cfg.TUN.Name != "fromfile" {
		t.Fatalf("tun.name = %q: a key the environment does not set must keep the file's value", cfg.TUN.Name)
	}
}

func TestLoad_FlagOverridesEnvAndFile(t *testing.T) {
	path := writeConfig(t, "tun:\n  mtu: 9000\nlog:\n  level: warn\n")
	cfg := mustLoad(t, LoadOptions{
		File:    path,
		Environ: []string{"TUNGATE_TUN_MTU=1400", "TUNGATE_LOG_LEVEL=error", "TUNGATE_UPSTREAM_CONNECT_TIMEOUT=1s"},
		Flags:   parsedFlags(t, "--mtu=1300", "--connect-timeout=2s", "--stack", "custom"),
	})
	if cfg.TUN.MTU != 1300 || cfg.Upstream.ConnectTimeout != 2*time.Second || cfg.Stack.Kind != StackCustom {
		t.Fatalf("flags did not override: mtu %d, connect_timeout %v, stack %q", cfg.TUN.MTU, cfg.Upstream.ConnectTimeout, cfg.Stack.Kind)
	}
	if cfg.Log.Level != "error" {
		t.Fatalf("log.level = %q, want env's error: an unset flag must not override", cfg.Log.Level)
	}
}

func TestLoad_UnsetFlagsKeepFileValues(t *testing.T) {
	path := writeConfig(t, "tun:\n  mtu: 9000\n  addresses: [198.18.0.1/24]\nupstream:\n  fwmark: 7\n  connect_timeout: 3s\n")
	cfg := mustLoad(t, LoadOptions{File: path, Flags: parsedFlags(t, "--log-level=debug")})
	if cfg.TUN.MTU != 9000 || cfg.Upstream.Fwmark != 7 || cfg.Upstream.ConnectTimeout != 3*time.Second {
		t.Fatalf("flag defaults overrode the file: %+v", cfg)
	}
	if want := prefixes("198.18.0.1/24"); !slices.Equal(cfg.TUN.Addresses, want) {
		t.Fatalf("tun.addresses = %v, want %v", cfg.TUN.Addresses, want)
	}
	if cfg.Log.Level != "debug" {
		t.Fatalf("log.level = %q, want debug from the flag", cfg.Log.Level)
	}
}

func TestLoad_FlagsSetEveryMappedKey(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{Flags: parsedFlags(t,
		"--stack=custom", "--tun-name=tg1", "--mtu=1400",
		"--tun-address=198.18.0.1/24", "--tun-address", "2001:2::1/64,198.18.1.1/24",
		"--route=198.19.0.0/24", "--upstream=socks5", "--upstream-address=127.0.0.1:1080",
		"--fwmark=0x10", "--bind-interface=veth0", "--connect-timeout=1m",
		"--log-level=debug", "--log-format=json",
		"--auto-route", "--strict-route", "--route-include=198.19.0.0/16", "--route-exclude=198.19.0.5/32,2001:2::/48",
		"--include-uid=1000,2000-2999", "--exclude-uid=0",
	)})
	want := Default()
	want.Stack.Kind = StackCustom
	want.TUN.Name, want.TUN.MTU = "tg1", 1400
	want.TUN.Addresses = prefixes("198.18.0.1/24", "2001:2::1/64", "198.18.1.1/24")
	want.TUN.Routes = prefixes("198.19.0.0/24")
	want.TUN.AutoRoute, want.TUN.StrictRoute = true, true
	want.TUN.RouteInclude = prefixes("198.19.0.0/16")
	want.TUN.RouteExclude = prefixes("198.19.0.5/32", "2001:2::/48")
	want.TUN.IncludeUID, want.TUN.ExcludeUID = []string{"1000", "2000-2999"}, []string{"0"}
	want.Upstream = Upstream{Kind: UpstreamSOCKS5, Address: "127.0.0.1:1080", Fwmark: 16, BindInterface: "veth0", ConnectTimeout: time.Minute}
	want.Log = Log{Level: "debug", Format: LogJSON}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestLoad_EmptyRouteFlagClearsFileRoutes(t *testing.T) {
	path := writeConfig(t, "tun:\n  routes: [198.19.0.0/24]\n")
	cfg := mustLoad(t, LoadOptions{File: path, Flags: parsedFlags(t, "--route=")})
	if len(cfg.TUN.Routes) != 0 {
		t.Fatalf("tun.routes = %v, want none", cfg.TUN.Routes)
	}
}

func TestRegisterFlags_DefinesExactlyTheMappedFlags(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	RegisterFlags(fs)
	var got []string
	fs.VisitAll(func(f *pflag.Flag) { got = append(got, f.Name) })
	var want []string
	s := newSchema()
	for name, key := range flagKeys() {
		want = append(want, name)
		if s.leafType[key] == nil {
			t.Errorf("flag --%s maps to unknown key %s", name, key)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("registered %q, mapped %q", got, want)
	}
}

func TestLoad_EnvListsAreCommaSeparated(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{Environ: []string{
		"TUNGATE_TUN_ADDRESSES=198.18.0.1/15, 2001:2::1/64 ,",
		"TUNGATE_TUN_ROUTES=198.19.0.0/24,198.19.1.0/24",
	}})
	if want := prefixes("198.18.0.1/15", "2001:2::1/64"); !slices.Equal(cfg.TUN.Addresses, want) {
		t.Fatalf("tun.addresses = %v, want %v", cfg.TUN.Addresses, want)
	}
	if want := prefixes("198.19.0.0/24", "198.19.1.0/24"); !slices.Equal(cfg.TUN.Routes, want) {
		t.Fatalf("tun.routes = %v, want %v", cfg.TUN.Routes, want)
	}
}

func TestLoad_EmptyEnvListClearsFileList(t *testing.T) {
	path := writeConfig(t, "tun:\n  routes: [198.19.0.0/24]\n")
	cfg := mustLoad(t, LoadOptions{File: path, Environ: []string{"TUNGATE_TUN_ROUTES="}})
	if len(cfg.TUN.Routes) != 0 {
		t.Fatalf("tun.routes = %v, want none", cfg.TUN.Routes)
	}
}

func TestLoad_FileListMayBeAString(t *testing.T) {
	path := writeConfig(t, "tun:\n  routes: 198.19.0.0/24, 198.19.1.0/24\n")
	cfg := mustLoad(t, LoadOptions{File: path})
	if want := prefixes("198.19.0.0/24", "198.19.1.0/24"); !slices.Equal(cfg.TUN.Routes, want) {
		t.Fatalf("tun.routes = %v, want %v", cfg.TUN.Routes, want)
	}
}

func TestLoad_NilEnvironReadsProcessEnvironment(t *testing.T) {
	t.Setenv("TUNGATE_TUN_MTU", "1400")
	cfg, err := Load(LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TUN.MTU != 1400 {
		t.Fatalf("tun.mtu = %d, want 1400 from the process environment", cfg.TUN.MTU)
	}
}

func TestLoad_UnknownNestedFileKeyNamesFullPath(t *testing.T) {
	path := writeConfig(t, "stack:\n  gvisr:\n    sack: false\n")
	ps := loadProblems(t, LoadOptions{File: path})
	p := requireProblem(t, ps, "stack.gvisr.sack", "unknown key; did you mean stack.gvisor.sack?")
	if p.Source != path {
		t.Fatalf("source = %q, want the file %q", p.Source, path)
	}
	if len(ps) != 1 {
		t.Fatalf("want one problem, got %q", ps)
	}
}

func TestLoad_UnknownFileKeysAreAllReported(t *testing.T) {
	path := writeConfig(t, "mtu: 1400\ntun:\n  adresses: [198.18.0.1/15]\nupstream:\n  kindd: direct\nextra: 1\n")
	ps := loadProblems(t, LoadOptions{File: path})
	requireProblem(t, ps, "mtu", "did you mean tun.mtu?")
	requireProblem(t, ps, "tun.adresses", "did you mean tun.addresses?")
	requireProblem(t, ps, "upstream.kindd", "did you mean upstream.kind?")
	p := requireProblem(t, ps, "extra", "unknown key")
	if strings.Contains(p.Message, "did you mean") {
		t.Fatalf("suggestion for an unrelated key: %q", p.Message)
	}
	if len(ps) != 4 {
		t.Fatalf("want 4 problems, got %q", ps)
	}
}

func TestLoad_SectionAndValueShapesAreChecked(t *testing.T) {
	path := writeConfig(t, "stack: gvisor\ntun:\n  mtu:\n    value: 1400\n")
	ps := loadProblems(t, LoadOptions{File: path})
	requireProblem(t, ps, "stack", "is a section and needs keys below it (kind, custom, gvisor)")
	requireProblem(t, ps, "tun.mtu", "expected a single value or list, got a mapping")
}

func TestLoad_UnknownEnvVarIsError(t *testing.T) {
	ps := loadProblems(t, LoadOptions{Environ: []string{"TUNGATE_STACK_KINDD=custom", "TUNGATE_TUN_MTU=1400"}})
	requireProblem(t, ps, "TUNGATE_STACK_KINDD", "unknown environment variable: no config key stack.kindd; did you mean TUNGATE_STACK_KIND?")
	if len(ps) != 1 {
		t.Fatalf("want one problem, got %q", ps)
	}
}

func TestLoad_EnvNamingASectionIsUnknown(t *testing.T) {
	ps := loadProblems(t, LoadOptions{Environ: []string{"TUNGATE_TUN=x"}})
	requireProblem(t, ps, "TUNGATE_TUN", "unknown environment variable")
}

func TestLoad_InvalidValuesNameTheirKey(t *testing.T) {
	tests := []struct {
		name, yaml, key, message string
	}{
		{"bad CIDR in a list", "tun:\n  addresses: [198.18.0.1/15, 198.18.0.300/15]\n", "tun.addresses[1]", `"198.18.0.300/15" is not an address/prefix-length`},
		{"address without length", "tun:\n  routes: [198.19.0.0]\n", "tun.routes[0]", "is not an address/prefix-length"},
		{"bad duration", "proxy:\n  idle_timeout: 5 minutes\n", "proxy.idle_timeout", `"5 minutes" is not a duration`},
		{"duration without unit", "upstream:\n  connect_timeout: 10\n", "upstream.connect_timeout", "write it with a unit"},
		{"negative timeout", "proxy:\n  udp_idle_timeout: -5s\n", "proxy.udp_idle_timeout", "-5s must be positive"},
		{"negative fwmark", "upstream:\n  fwmark: -1\n", "upstream.fwmark", "-1 is out of range [0, 4294967295]"},
		{"fwmark too large", "upstream:\n  fwmark: 4294967296\n", "upstream.fwmark", "4294967296 is out of range [0, 4294967295]"},
		{"fractional mtu", "tun:\n  mtu: 1500.5\n", "tun.mtu", "1500.5 is not an integer"},
		{"mtu text", "tun:\n  mtu: big\n", "tun.mtu", `"big" is not an integer`},
		{"mtu as boolean", "tun:\n  mtu: true\n", "tun.mtu", "expected an integer, got the boolean true"},
		{"bool text", "stack:\n  gvisor:\n    sack: maybe\n", "stack.gvisor.sack", `"maybe" is not a boolean`},
		{"list for a string", "upstream:\n  kind: [direct]\n", "upstream.kind", "expected a single value, got a list"},
		{"unknown kind", "stack:\n  kind: lwip\n", "stack.kind", "not one of gvisor, custom"},
		{"socks5 without address", "upstream:\n  kind: socks5\n", "upstream.address", "required"},
		{"address not host:port", "upstream:\n  kind: http\n  address: proxy\n", "upstream.address", "not host:port"},
		{"mtu out of range", "tun:\n  mtu: 70000\n", "tun.mtu", "70000 is out of range [576, 65535]"},
		{"log level", "log:\n  level: trace\n", "log.level", "not one of debug, info, warn, error"},
		{"default route loop", "tun:\n  routes: [0.0.0.0/0]\n", "tun.routes[0]", "loop"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			requireProblem(t, loadProblems(t, LoadOptions{File: path}), tt.key, tt.message)
		})
	}
}

func TestLoad_InvalidEnvValuesNameKeyAndVariable(t *testing.T) {
	tests := []struct {
		env, key, message string
	}{
		{"TUNGATE_TUN_ADDRESSES=198.18.0.1/15,nope", "tun.addresses[1]", `"nope" is not an address/prefix-length`},
		{"TUNGATE_UPSTREAM_CONNECT_TIMEOUT=soon", "upstream.connect_timeout", "not a duration"},
		{"TUNGATE_UPSTREAM_FWMARK=4294967296", "upstream.fwmark", "out of range [0, 4294967295]"},
		{"TUNGATE_UPSTREAM_FWMARK=-1", "upstream.fwmark", "out of range [0, 4294967295]"},
		{"TUNGATE_TUN_MTU=", "tun.mtu", `"" is not an integer`},
		{"TUNGATE_STACK_GVISOR_SACK=yes", "stack.gvisor.sack", "not a boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			p := requireProblem(t, loadProblems(t, LoadOptions{Environ: []string{tt.env}}), tt.key, tt.message)
			if name, _, _ := strings.Cut(tt.env, "="); p.Source != name {
				t.Fatalf("source = %q, want %q", p.Source, name)
			}
		})
	}
}

func TestLoad_ProblemsNameTheLayerThatWon(t *testing.T) {
	path := writeConfig(t, "tun:\n  mtu: 70000\nlog:\n  level: loud\n")
	ps := loadProblems(t, LoadOptions{
		File:    path,
		Environ: []string{"TUNGATE_LOG_LEVEL=louder", "TUNGATE_PROXY_IDLE_TIMEOUT=-1s"},
		Flags:   parsedFlags(t, "--log-format=xml"),
	})
	for key, source := range map[string]string{
		"tun.mtu":            path,
		"log.level":          "TUNGATE_LOG_LEVEL",
		"proxy.idle_timeout": "TUNGATE_PROXY_IDLE_TIMEOUT",
		"log.format":         "--log-format",
	} {
		if p := requireProblem(t, ps, key, ""); p.Source != source {
			t.Errorf("%s: source %q, want %q", key, p.Source, source)
		}
	}
	if p := requireProblem(t, ps, "log.level", ""); !strings.Contains(p.Message, "louder") {
		t.Errorf("log.level problem %q should be about the env value", p.Message)
	}
}

func TestLoad_DecodeFailureIsNotRestatedByValidate(t *testing.T) {
	path := writeConfig(t, "tun:\n  addresses: [nope]\n")
	ps := loadProblems(t, LoadOptions{File: path})
	if len(ps) != 1 || ps[0].Key != "tun.addresses[0]" {
		t.Fatalf("want exactly the decode problem for tun.addresses[0], got %q", ps)
	}
}

func TestLoad_CollectsProblemsFromEveryLayer(t *testing.T) {
	path := writeConfig(t, "tun:\n  mtu: 70000\n  bogus: 1\n")
	ps := loadProblems(t, LoadOptions{
		File:    path,
		Environ: []string{"TUNGATE_NOPE=1", "TUNGATE_UPSTREAM_KIND=socks5"},
		Flags:   parsedFlags(t, "--connect-timeout=-1s"),
	})
	requireProblem(t, ps, "tun.bogus", "unknown key")
	requireProblem(t, ps, "TUNGATE_NOPE", "unknown environment variable")
	requireProblem(t, ps, "tun.mtu", "out of range")
	requireProblem(t, ps, "upstream.address", "required")
	requireProblem(t, ps, "upstream.connect_timeout", "must be positive")
	if len(ps) != 5 {
		t.Fatalf("want 5 problems, got %q", ps)
	}
}

func TestLoad_MissingFileIsError(t *testing.T) {
	_, err := Load(LoadOptions{File: filepath.Join(t.TempDir(), "absent.yaml"), Environ: []string{}})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load = %v, want an os.ErrNotExist error", err)
	}
}

func TestLoad_MalformedYAMLIsError(t *testing.T) {
	path := writeConfig(t, "tun:\n  mtu: [1500\n")
	_, err := Load(LoadOptions{File: path, Environ: []string{}})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load = %v, want a parse error naming %s", err, path)
	}
}

func TestLoad_EmptyFileGivesDefaults(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{File: writeConfig(t, "")})
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("got %+v, want Default()", cfg)
	}
}

func TestLoad_NullValueKeepsDefault(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{File: writeConfig(t, "tun:\n  mtu:\n")})
	if cfg.TUN.MTU != Default().TUN.MTU {
		t.Fatalf("tun.mtu = %d, want the default", cfg.TUN.MTU)
	}
}

func TestLoad_NumericPasswordIsAString(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{File: writeConfig(t,
		"upstream:\n  kind: socks5\n  address: 127.0.0.1:1080\n  username: 42\n  password: 12345\n")})
	if cfg.Upstream.Username != "42" || cfg.Upstream.Password != "12345" {
		t.Fatalf("credentials = %q/%q", cfg.Upstream.Username, cfg.Upstream.Password)
	}
}

func TestLoad_AddressesKeepHostBits(t *testing.T) {
	cfg := mustLoad(t, LoadOptions{Environ: []string{"TUNGATE_TUN_ADDRESSES=198.18.0.1/15"}})
	if got := cfg.TUN.Addresses[0]; got != netip.MustParsePrefix("198.18.0.1/15") || got.Addr() != netip.MustParseAddr("198.18.0.1") {
		t.Fatalf("tun.addresses[0] = %v, want 198.18.0.1/15", got)
	}
}
