package faulty

import (
	"strings"
	"testing"
	"time"

	"github.com/tungate/tungate/tun"
	"github.com/tungate/tungate/tun/tuntest"
)

func TestParseSpec_ReadsEveryKey(t *testing.T) {
	tests := []struct {
		spec string
		want Config
	}{
		{"", Config{}},
		{" , ", Config{}},
		{"loss=0.01", Config{Loss: 0.01}},
		{"loss=1%,dup=0.5%", Config{Loss: 0.01, Duplicate: 0.005}},
		{
			"loss=0.01,dup=0.005,reorder=0.02,seed=42,dir=both",
			Config{Loss: 0.01, Duplicate: 0.005, Reorder: 0.02, Seed: 42, Directions: Both},
		},
		{
			" reorder = 0.5 , depth=3, hold=20ms ,delay=5ms,jitter=1ms,dir=in",
			Config{Reorder: 0.5, ReorderDepth: 3, ReorderTimeout: 20 * time.Millisecond,
				Delay: 5 * time.Millisecond, Jitter: time.Millisecond, Directions: Inbound},
		},
		{"dir=out,seed=-7,loss=1", Config{Directions: Outbound, Seed: -7, Loss: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseSpec(tt.spec)
			if err != nil {
				t.Fatalf("ParseSpec: %v", err)
			}
			if got != tt.want {
				t.Errorf("ParseSpec = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseSpec_ErrorNamesTheBadField(t *testing.T) {
	tests := []struct {
		spec, mention string
	}{
		{"loss=2", "loss"},
		{"loss=150%", "loss"},
		{"loss=-0.1", "loss"},
		{"loss=NaN", "loss"},
		{"dup=x", "dup"},
		{"reorder=", "reorder"},
		{"depth=0", "depth"},
		{"depth=5000", "depth"},
		{"depth=two", "depth"},
		{"hold=-1ms", "hold"},
		{"delay=5", "delay"},
		{"jitter=fast", "jitter"},
		{"seed=0x10", "seed"},
		{"dir=up", "dir"},
		{"los=0.1", "los"},
		{"loss", "loss"},
		{"=1", "=1"},
		{"loss=0.1,loss=0.2", "loss given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := ParseSpec(tt.spec)
			if err == nil {
				t.Fatalf("ParseSpec(%q) succeeded", tt.spec)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error %q does not mention %q", err, tt.mention)
			}
		})
	}
}

func TestConfigString_RoundTripsThroughParseSpec(t *testing.T) {
	for _, c := range []Config{
		{},
		{Loss: 0.01, Duplicate: 0.005, Reorder: 0.25, ReorderDepth: 2, ReorderTimeout: time.Second,
			Delay: 3 * time.Millisecond, Jitter: 500 * time.Microsecond, Seed: 42, Directions: Outbound},
		{Loss: 1, Directions: Both},
	} {
		s := c.String()
		got, err := ParseSpec(s)
		if err != nil {
			t.Fatalf("ParseSpec(%q): %v", s, err)
		}
		want := c
		if want.Directions == Both {
			want.Directions = 0 // String leaves the default out
		}
		if got != want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", s, got, want)
		}
	}
}

func TestValidate_ReportsEveryProblem(t *testing.T) {
	err := Config{Loss: 1.5, Duplicate: -1, ReorderDepth: -1, Delay: -time.Second, Directions: 8}.Validate()
	if err == nil {
		t.Fatal("Validate accepted an invalid Config")
	}
	for _, field := range []string{"Loss", "Duplicate", "ReorderDepth", "Delay", "Directions"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if err := (Config{Loss: 1, Reorder: 0.5, Jitter: time.Millisecond}).Validate(); err != nil {
		t.Errorf("Validate rejected a valid Config: %v", err)
	}
}

func TestWrap_RefusesInvalidConfig(t *testing.T) {
	dev := tuntest.New(1500)
	defer dev.Close()
	if d, err := Wrap(dev, Config{Loss: 2}); err == nil || d != nil {
		t.Errorf("Wrap(Loss 2) = %v, %v; want an error", d, err)
	}
}

// mustWrap is Wrap for configurations the test knows to be valid.
func mustWrap(t *testing.T, dev tun.Device, cfg Config) *Device {
	t.Helper()
	d, err := Wrap(dev, cfg)
	if err != nil {
		t.Fatalf("Wrap: %v", err)
	}
	return d
}
