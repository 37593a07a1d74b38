package bench

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/gwproc"
	"github.com/tungate/tungate/internal/netlab"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// progressLog collects progress lines and can act on them.
type progressLog struct {
	mu     sync.Mutex // guards b and onLine
	b      strings.Builder
	onLine func(text string)
}

func (p *progressLog) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.b.Write(b)
	if p.onLine != nil {
		p.onLine(p.b.String())
	}
	return len(b), nil
}

func (p *progressLog) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.b.String()
}

// assertNamespacesGone checks that the namespaces the progress named
// were removed.
func assertNamespacesGone(t *testing.T, progress string) {
	t.Helper()
	m := regexp.MustCompile(`namespaces (\S+) and (\S+),`).FindStringSubmatch(progress)
	if m == nil {
		t.Fatalf("progress does not name the namespaces:\n%s", progress)
	}
	for _, ns := range m[1:] {
		if _, err := os.Stat("/run/netns/" + ns); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still exists (%v)", ns, err)
		}
	}
}

func TestRun_KernelBaselineMeasuresEveryFigure(t *testing.T) {
	needRoot(t)
	var progress progressLog
	rep, err := Run(context.Background(), Options{
		Stacks:   []string{StackKernel},
		Tests:    []string{TestLatency, TestConnect, TestConnectReuse, TestUpload1, TestDownloadN, TestUDP},
		Duration: 150 * time.Millisecond, Rounds: 1, Streams: 2, ReusePorts: 256,
		ConnectDuration: 300 * time.Millisecond, ConnectInterval: 100 * time.Millisecond,
		Progress: &progress,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, progress.String())
	}
	if len(rep.Failures) > 0 {
		t.Fatalf("failures: %+v", rep.Failures)
	}
	for _, res := range rep.Results {
		k := res.value(StackKernel)
		if res.Metric == mGatewayCPU || res.Metric == mGatewayCPUConn || res.Metric == mRSSEnd {
			if k.NA == "" {
				t.Errorf("%s/%s: kernel has a gateway CPU figure", res.Test, res.Metric)
			}
			continue
		}
		if k.Median == nil {
			t.Errorf("%s/%s: no figure (%s)", res.Test, res.Metric, k.NA)
			continue
		}
		if *k.Median <= 0 && res.Metric != mFailed && res.Metric != mStalled && res.Metric != mLoss {
			t.Errorf("%s/%s: %v %s", res.Test, res.Metric, *k.Median, res.Unit)
		}
	}
	// Both connect tests list the rate of each of their three intervals.
	if n := strings.Count(progress.String(), "conn/s per 100ms: "); n != 2 {
		t.Errorf("%d interval lines, want one per connect test:\n%s", n, progress.String())
	}
	for line := range strings.Lines(progress.String()) {
		if _, rates, ok := strings.Cut(line, "conn/s per 100ms: "); ok && len(strings.Fields(rates)) != 3 {
			t.Errorf("interval line %q: want 3 rates", line)
		}
	}
	assertNamespacesGone(t, progress.String())
}

func TestClientPortRange_SetsAndRestoresTheClientsRange(t *testing.T) {
	needRoot(t)
	lab, err := netlab.New(netlab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	const key = "net/ipv4/ip_local_port_range"
	before, err := lab.Client().Sysctl(key)
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{lab: lab}
	restore, err := tg.clientPortRange(60000, 60999)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := lab.Client().Sysctl(key); got != "60000\t60999" {
		t.Errorf("during the test: %q", got)
	}
	restore()
	if got, _ := lab.Client().Sysctl(key); got != before {
		t.Errorf("after restore: %q, want %q", got, before)
	}
}

func TestRun_GatewayThatDiesAtStartIsAFailureNotAnAbort(t *testing.T) {
	needRoot(t)
	var progress progressLog
	rep, err := Run(context.Background(), Options{
		Gateway:  gwproc.Command{Path: "/bin/false"},
		Stacks:   []string{StackKernel, StackCustom},
		Tests:    []string{TestLatency},
		Duration: 50 * time.Millisecond, Rounds: 1,
		Progress: &progress,
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Stack != StackCustom || rep.Failures[0].Test != "setup" ||
		!strings.Contains(rep.Failures[0].Error, "exited at start") {
		t.Fatalf("failures: %+v", rep.Failures)
	}
	lat := rep.Results[0]
	if lat.value(StackKernel).Median == nil || lat.value(StackCustom).NA == "" {
		t.Fatalf("latency: kernel %+v, custom %+v", lat.value(StackKernel), lat.value(StackCustom))
	}
	assertNamespacesGone(t, progress.String())
}

// runCancelledOn runs o and cancels the run once the progress contains
// trigger.
func runCancelledOn(t *testing.T, o Options, trigger string) (*Report, *progressLog) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := &progressLog{onLine: func(text string) {
		if strings.Contains(text, trigger) {
			cancel()
		}
	}}
	o.Progress = progress
	rep, err := Run(ctx, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if rep == nil || !rep.Interrupted {
		t.Fatalf("report %+v, want interrupted", rep)
	}
	if len(rep.Failures) != 0 {
		t.Errorf("an interruption is not a failure: %+v", rep.Failures)
	}
	return rep, progress
}

func TestRun_CancelInterruptsARunningTestPromptly(t *testing.T) {
	needRoot(t)
	start := time.Now()
	_, progress := runCancelledOn(t, Options{
		Stacks: []string{StackKernel}, Tests: []string{TestLatency},
		Duration: 10 * time.Second, Rounds: 1,
	}, "kernel  latency")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the cancel took effect after %v", took)
	}
	assertNamespacesGone(t, progress.String())
}

func TestRun_InterruptedReportKeepsTheCompletedRounds(t *testing.T) {
	needRoot(t)
	rep, progress := runCancelledOn(t, Options{
		Stacks: []string{StackKernel}, Tests: []string{TestLatency},
		Duration: 100 * time.Millisecond, Rounds: 3,
	}, "round 2/3")
	if lat := rep.Results[0].value(StackKernel); len(lat.Rounds) != 1 {
		t.Errorf("latency p50: %+v, want the one completed round", lat)
	}
	assertNamespacesGone(t, progress.String())
}
