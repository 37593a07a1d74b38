package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// asGatewayEnv, when set to 1, makes the test binary behave as the
// gateway binary: the bench and the demo re-execute os.Executable(),
// which in a test is this binary.
const asGatewayEnv = "GATEWAY_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asGatewayEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// runAsRoot runs the command line in-process with the real process
// wiring, children re-executing this test binary as the gateway.
func runAsRoot(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and a TUN device")
	}
	t.Setenv(asGatewayEnv, "1")
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBench_QuickRunReportsEveryFigureWithAUnitAndNoFailures(t *testing.T) {
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.html")
	code, stdout, stderr := runAsRoot(t, "bench", "--quick", "--duration", "300ms", "--rounds", "1",
		"--stacks", "kernel,custom,gvisor", "--json", jsonPath, "--html", htmlPath)
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var rep struct {
		Results []struct {
			Test, Metric, Unit string
			Stacks             []struct {
				Stack         string
				Median        *float64
				NA            string
				RatioToKernel *float64 `json:"ratio_to_kernel"`
			}
		}
		Failures []any
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("json: %v", err)
	}
	if len(rep.Failures) != 0 {
		t.Fatalf("failures: %v", rep.Failures)
	}
	tests := make(map[string]bool)
	for _, res := range rep.Results {
		tests[res.Test] = true
		if res.Unit == "" {
			t.Errorf("%s/%s has no unit", res.Test, res.Metric)
		}
		if len(res.Stacks) != 3 {
			t.Errorf("%s/%s: %d stacks", res.Test, res.Metric, len(res.Stacks))
		}
		for _, v := range res.Stacks {
			// gVisor answers no SYN for a 4-tuple in its TIME-WAIT, so in
			// connect-reuse it may complete no connection to divide by.
			stalls := v.Stack == "gvisor" && res.Test == "connect-reuse" && strings.HasSuffix(res.Metric, "per_connection")
			switch {
			case res.Test == "connect-reuse" && v.Stack == "custom" && res.Metric == "stalled" && (v.Median == nil || *v.Median != 0):
				t.Errorf("connect-reuse: the custom stack stalled on reused ports: %+v", v)
			case res.Test == "connect-reuse" && v.Stack == "custom" && res.Metric == "rate" && (v.Median == nil || *v.Median <= 0):
				t.Errorf("connect-reuse: custom rate %+v", v)
			case stalls && v.Median == nil && v.NA != "":
			case v.Stack != "kernel" && v.Median == nil:
				t.Errorf("%s/%s/%s: no figure: %s", res.Test, res.Metric, v.Stack, v.NA)
			case v.Stack == "kernel" && v.Median == nil && v.NA == "":
				t.Errorf("%s/%s/kernel: neither a figure nor a reason", res.Test, res.Metric)
			}
		}
	}
	if len(tests) != 9 { // memory, latency, the two connect tests, four bulk tests, udp
		t.Errorf("tests in the report: %v", tests)
	}
	for _, want := range []string{"×kernel", "Upload, 1 stream", "connections per second", "datagrams received per second", "kernel", "custom", "gvisor"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "round 1/1  gvisor  download-n") || !strings.Contains(stderr, "cleaned up") {
		t.Errorf("progress incomplete:\n%s", stderr)
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil || !bytes.Contains(page, []byte("<svg")) {
		t.Errorf("html report: %v, %d bytes", err, len(page))
	}
}

func TestBench_UnknownStackExits2(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.app.execute([]string{"bench", "--stacks", "kernel,bsd"}); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if !strings.Contains(p.stderr.String(), `gateway: bench: unknown stack "bsd"`) {
		t.Fatalf("stderr: %s", p.stderr.String())
	}
}

func TestBench_ZeroRoundsIsAUsageErrorNotTheDefault(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.app.execute([]string{"bench", "--rounds", "0"}); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if !strings.Contains(p.stderr.String(), "--rounds must be positive") {
		t.Fatalf("stderr: %s", p.stderr.String())
	}
}

func TestBench_UnwritableJSONPathFailsBeforeRunning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the root check comes before the output files")
	}
	p := newFakeProcess(t)
	code := p.app.execute([]string{"bench", "--json", filepath.Join(t.TempDir(), "missing", "b.json")})
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	if !strings.Contains(p.stderr.String(), "gateway: bench: --json:") || strings.Contains(p.stderr.String(), "round") {
		t.Fatalf("stderr: %s", p.stderr.String())
	}
}
