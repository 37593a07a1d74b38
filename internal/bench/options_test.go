package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/gwproc"
)

func TestOptions_QuickDefaultsAreShort(t *testing.T) {
	o := Options{Quick: true}.withDefaults()
	if o.Duration != QuickDuration || o.Rounds != QuickRounds || o.IdleConns != QuickIdleConns {
		t.Fatalf("quick defaults: duration %v rounds %d idle %d", o.Duration, o.Rounds, o.IdleConns)
	}
	full := Options{}.withDefaults()
	if full.Duration != DefaultDuration || full.Rounds != DefaultRounds || full.IdleConns != DefaultIdleConns {
		t.Fatalf("full defaults: duration %v rounds %d idle %d", full.Duration, full.Rounds, full.IdleConns)
	}
}

func TestOptions_ExplicitValuesWinOverQuickDefaults(t *testing.T) {
	o := Options{Quick: true, Duration: 300 * time.Millisecond, Rounds: 1}.withDefaults()
	if o.Duration != 300*time.Millisecond || o.Rounds != 1 {
		t.Fatalf("got duration %v rounds %d", o.Duration, o.Rounds)
	}
}

func TestOptions_ListsAreNormalisedToRunOrder(t *testing.T) {
	o := Options{
		Stacks: []string{"gvisor", " Kernel", "gvisor"},
		Tests:  []string{"upload-1", "MEMORY", "latency"},
	}.withDefaults()
	if !slices.Equal(o.Stacks, []string{"kernel", "gvisor"}) {
		t.Errorf("stacks %v", o.Stacks)
	}
	if !slices.Equal(o.Tests, []string{"memory", "latency", "upload-1"}) {
		t.Errorf("tests %v", o.Tests)
	}
}

func TestOptions_AllMeansEveryTest(t *testing.T) {
	o := Options{Tests: []string{"latency", "all"}}.withDefaults()
	if !slices.Equal(o.Tests, AllTests()) {
		t.Fatalf("tests %v", o.Tests)
	}
}

func TestOptions_ReusePortsDefaultToLinuxsRangeOrASmallOneWhenQuick(t *testing.T) {
	if got := (Options{}).withDefaults().ReusePorts; got != 60999-32768+1 {
		t.Errorf("full: %d ports", got)
	}
	if got := (Options{Quick: true}).withDefaults().ReusePorts; got != QuickReusePorts {
		t.Errorf("quick: %d ports", got)
	}
	for _, n := range []int{16, 60999 - 1024 + 1} {
		if err := (Options{Gateway: gwproc.Command{Path: "/gw"}, ReusePorts: n}).Validate(); err != nil {
			t.Errorf("%d ports: %v", n, err)
		}
	}
}

func TestOptions_ValidateReportsEveryProblem(t *testing.T) {
	err := Options{Stacks: []string{"kernel", "bsd"}, Tests: []string{"speed"}, Rounds: -1, MTU: 100, ReusePorts: 60000}.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`unknown stack "bsd"`, `unknown test "speed"`, "rounds must be positive", "mtu 100", "reuse ports 60000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestOptions_GatewayBinaryIsNeededOnlyForGatewayStacks(t *testing.T) {
	if err := (Options{Stacks: []string{"kernel"}}).Validate(); err != nil {
		t.Fatalf("kernel only: %v", err)
	}
	err := Options{Stacks: []string{"custom"}}.Validate()
	if err == nil || !strings.Contains(err.Error(), "no gateway binary") {
		t.Fatalf("custom without a binary: %v", err)
	}
}

func TestOptions_WarmupIsAQuarterCappedAtASecond(t *testing.T) {
	if w := (Options{Duration: 400 * time.Millisecond}).warmup(); w != 100*time.Millisecond {
		t.Errorf("warm-up of 400ms: %v", w)
	}
	if w := (Options{Duration: 10 * time.Second}).warmup(); w != time.Second {
		t.Errorf("warm-up of 10s: %v", w)
	}
}

func TestOptions_FaultsAreCheckedAndGivenToEveryGateway(t *testing.T) {
	bad := Options{Gateway: gwproc.Command{Path: "/gw"}, Faults: "loss=2"}.Validate()
	if bad == nil || !strings.Contains(bad.Error(), "faults") || !strings.Contains(bad.Error(), "loss") {
		t.Fatalf("bad spec: %v", bad)
	}
	o := Options{Gateway: gwproc.Command{Path: "/gw"}, Faults: "loss=0.01,seed=3", CPUProfile: "/tmp/p"}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	spec := gatewaySpecFor(o.withDefaults(), StackGVisor, 2)
	mem := filepath.Join(os.TempDir(), fmt.Sprintf("tungate-bench-%d-gvisor.heap", os.Getpid()))
	want := []string{"--memprofile", mem, "--cpuprofile", "/tmp/p-gvisor-round2.prof", "--faults", "loss=0.01,seed=3"}
	if !slices.Equal(spec.Extra, want) || spec.Stack != StackGVisor {
		t.Fatalf("gateway flags %q, want %q", spec.Extra, want)
	}
	if extra := gatewaySpecFor(Options{}.withDefaults(), StackCustom, 1).Extra; len(extra) != 2 || extra[0] != "--memprofile" {
		t.Fatalf("without faults or profile: %q, want only --memprofile (the memory test's breakdown)", extra)
	}
	o.MemProfile = "/tmp/m"
	if extra := gatewaySpecFor(o.withDefaults(), StackCustom, 3).Extra; extra[1] != "/tmp/m-custom-round3.heap" {
		t.Fatalf("with MemProfile: heap profile at %q, want /tmp/m-custom-round3.heap", extra[1])
	}
}

func TestOptions_APIRunsEveryGatewayWithItsAPIOn(t *testing.T) {
	o := Options{Gateway: gwproc.Command{Path: "/gw"}, API: true}.withDefaults()
	extra := gatewaySpecFor(o, StackCustom, 1).Extra
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("tungate-bench-%d-custom.sock", os.Getpid()))
	if i := slices.Index(extra, "--api-listen"); i < 0 || i+1 >= len(extra) || extra[i+1] != sock {
		t.Fatalf("gateway flags %q, want --api-listen %s", extra, sock)
	}
	var b strings.Builder
	if err := WriteTable(&b, &Report{Settings: settingsOf(o)}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "API on") {
		t.Errorf("the table does not say the API was on:\n%s", b.String())
	}
}
