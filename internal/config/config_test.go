package config

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

const exampleFile = "../../configs/gateway.yaml"

func TestDefault_IsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestDefault_RoutesNothingIntoTheTUN(t *testing.T) {
	if r := Default().TUN.Routes; len(r) != 0 {
		t.Fatalf("default tun.routes = %v, want none", r)
	}
}

func TestDefault_ReturnsIndependentValues(t *testing.T) {
	a := Default()
	a.TUN.Addresses[0] = netip.MustParsePrefix("198.19.0.1/24")
	if b := Default(); b.TUN.Addresses[0] == a.TUN.Addresses[0] {
		t.Fatal("modifying one Default() changed another")
	}
}

func TestExampleFile_EqualsDefault(t *testing.T) {
	cfg, err := Load(LoadOptions{File: exampleFile, Environ: []string{}})
	if err != nil {
		t.Fatalf("Load(%s): %v", exampleFile, err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("%s differs from Default():\n got %+v\nwant %+v", exampleFile, cfg, Default())
	}
}

// The example must spell out every key, not merely agree with the defaults
// by leaving keys out.
func TestExampleFile_SetsEveryKey(t *testing.T) {
	v := viper.New()
	v.SetConfigFile(exampleFile)
	if err := v.ReadInConfig(); err != nil {
		t.Fatal(err)
	}
	for _, lf := range newSchema().leaves {
		if !v.InConfig(lf.key) {
			t.Errorf("%s does not set %s", exampleFile, lf.key)
		}
	}
}

func TestWriteYAML_LoadsBackToTheSameConfig(t *testing.T) {
	cfg := Default()
	cfg.TUN.Name = "tg-test"
	cfg.TUN.MTU = 9000
	cfg.TUN.Routes = []netip.Prefix{netip.MustParsePrefix("198.19.0.0/24")}
	cfg.Upstream.Kind = UpstreamSOCKS5
	cfg.Upstream.Address = "127.0.0.1:1080"
	cfg.Upstream.Username = "user \"quoted\"\n"
	cfg.Upstream.Fwmark = 1
	cfg.Proxy.IdleTimeout = 90 * time.Second
	cfg.Log.Format = LogJSON

	var buf bytes.Buffer
	if err := cfg.WriteYAML(&buf); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "out.yaml")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load(LoadOptions{File: path, Environ: []string{}})
	if err != nil {
		t.Fatalf("Load of WriteYAML output: %v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Fatalf("round trip differs:\n got %+v\nwant %+v\nyaml:\n%s", got, cfg, buf.String())
	}
}

func TestWriteYAML_RedactsPassword(t *testing.T) {
	cfg := Default()
	cfg.Upstream.Kind = UpstreamHTTP
	cfg.Upstream.Address = "127.0.0.1:3128"
	cfg.Upstream.Username = "u"
	cfg.Upstream.Password = "hunter2"
	cfg.API.Secret = "swordfish"
	var buf bytes.Buffer
	if err := cfg.WriteYAML(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "hunter2") || strings.Contains(buf.String(), "swordfish") {
		t.Fatalf("password or api secret in output:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), `secret: "`+Redacted+`"`) {
		t.Fatalf("no redacted api secret line in:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), `password: "`+Redacted+`"`) {
		t.Fatalf("no redacted password line in:\n%s", buf.String())
	}
}

func TestWriteYAML_FollowsSchemaOrder(t *testing.T) {
	var buf bytes.Buffer
	if err := Default().WriteYAML(&buf); err != nil {
		t.Fatal(err)
	}
	var tops []string
	for line := range strings.Lines(buf.String()) {
		if !strings.HasPrefix(line, " ") {
			tops = append(tops, strings.TrimSpace(line))
		}
	}
	want := []string{"tun:", "stack:", "upstream:", "outbounds: []", "route:", "dns:", "proxy:", "udp:", "api:", "log:"}
	if !slices.Equal(tops, want) {
		t.Fatalf("top-level lines = %q, want %q", tops, want)
	}
}

func TestShortDuration_DropsZeroTrailingUnits(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Minute:           "5m",
		time.Hour:                 "1h",
		90 * time.Minute:          "1h30m",
		10 * time.Second:          "10s",
		time.Hour + 5*time.Second: "1h0m5s",
		1500 * time.Millisecond:   "1.5s",
		0:                         "0s",
		-time.Minute:              "-1m",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestMaxSessionsFor_DerivesFromTheOpenFileLimit(t *testing.T) {
	for _, tc := range []struct {
		key    int
		nofile uint64
		want   int
	}{
		{0, 20000, 1250},   // a sixteenth
		{0, 1 << 20, 4096}, // at most 4096
		{0, 256, 64},       // at least 64
		{100, 20000, 100},  // the key wins
	} {
		if got := (UDP{MaxSessions: tc.key}).MaxSessionsFor(tc.nofile); got != tc.want {
			t.Errorf("max_sessions %d, nofile %d: %d, want %d", tc.key, tc.nofile, got, tc.want)
		}
	}
}

func TestMaxConnectionsFor_DerivesFromTheOpenFileLimit(t *testing.T) {
	for _, tc := range []struct {
		key    int
		nofile uint64
		want   int
	}{
		{0, 20000, 19000}, // 5% kept back
		{0, 1024, 960},    // at least 64 kept back
		{0, 10, 1},        // never zero, which would mean no limit
		{500, 20000, 500}, // the key wins
		{-1, 20000, 0},    // no limit
	} {
		if got := (Proxy{MaxConnections: tc.key}).MaxConnectionsFor(tc.nofile); got != tc.want {
			t.Errorf("max_connections %d, nofile %d: %d, want %d", tc.key, tc.nofile, got, tc.want)
		}
	}
}
