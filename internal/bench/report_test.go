package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/gwproc"
)

// sampleReport records two rounds of a few tests on three stacks.
func sampleReport(t *testing.T) *Report {
	t.Helper()
	o := Options{Gateway: gwproc.Command{Path: "/gw"}, Tests: []string{TestMemory, TestConnect, TestUpload1}, Rounds: 2}.withDefaults()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := newRecorder(o, start)
	for _, f := range []figures{
		{mThroughput: 1000, mMachineCPU: 1},
		{mThroughput: 1200, mMachineCPU: 1.2},
	} {
		rec.add(StackKernel, TestUpload1, f)
	}
	rec.add(StackCustom, TestUpload1, figures{mThroughput: 500, mMachineCPU: 4, mGatewayCPU: 2})
	rec.add(StackCustom, TestUpload1, figures{mThroughput: 600, mMachineCPU: 5, mGatewayCPU: 3})
	rec.add(StackKernel, TestConnect, figures{mRate: 10000, mFailed: 0})
	rec.add(StackCustom, TestConnect, figures{mRate: 2000, mFailed: 2})
	rec.add(StackCustom, TestConnect, figures{mRate: 3000, mFailed: 1})
	rec.add(StackCustom, TestMemory, figures{mPerConn: 50000, mRSSIdle: 20, mRSSBase: 10})
	rec.fail(StackGVisor, "setup", 1, errors.New("gateway exited at start\nsecond line"))
	return rec.report(start.Add(time.Minute), Host{Kernel: "6.1", CPUs: Quantity{2, "cpus"}, GoVersion: "go1.26"})
}

func findResult(t *testing.T, r *Report, test, metric string) *Result {
	t.Helper()
	for i := range r.Results {
		if r.Results[i].Test == test && r.Results[i].Metric == metric {
			return &r.Results[i]
		}
	}
	t.Fatalf("no result %s/%s", test, metric)
	return nil
}

func TestReport_MedianSpreadAndRatioToKernel(t *testing.T) {
	r := sampleReport(t)
	res := findResult(t, r, TestUpload1, mThroughput)
	k, c := res.value(StackKernel), res.value(StackCustom)
	if *k.Median != 1100 || *k.Min != 1000 || *k.Max != 1200 {
		t.Errorf("kernel %v %v %v", *k.Median, *k.Min, *k.Max)
	}
	if *c.Median != 550 || *c.RatioToKernel != 0.5 {
		t.Errorf("custom median %v ratio %v", *c.Median, *c.RatioToKernel)
	}
	if *k.RatioToKernel != 1 {
		t.Errorf("kernel's own ratio %v", *k.RatioToKernel)
	}
	if res.Unit != "MB/s" || res.Better != "higher" {
		t.Errorf("unit %q better %q", res.Unit, res.Better)
	}
}

func TestReport_GatewayOnlyFiguresAreNotAvailableForKernel(t *testing.T) {
	r := sampleReport(t)
	for _, m := range []struct{ test, metric string }{{TestUpload1, mGatewayCPU}, {TestMemory, mPerConn}} {
		k := findResult(t, r, m.test, m.metric).value(StackKernel)
		if k.NA == "" || k.Median != nil {
			t.Errorf("%s/%s: kernel has %+v, want n/a", m.test, m.metric, k)
		}
		if c := findResult(t, r, m.test, m.metric).value(StackCustom); c.RatioToKernel != nil {
			t.Errorf("%s/%s: ratio without a kernel figure", m.test, m.metric)
		}
	}
}

func TestReport_StackWithoutRoundsIsNotAvailable(t *testing.T) {
	g := findResult(t, sampleReport(t), TestUpload1, mThroughput).value(StackGVisor)
	if g.NA == "" || g.Median != nil {
		t.Fatalf("gvisor: %+v", g)
	}
}

func TestReport_FailedConnectionsAreTotalled(t *testing.T) {
	c := findResult(t, sampleReport(t), TestConnect, mFailed).value(StackCustom)
	if c.Total == nil || *c.Total != 3 {
		t.Fatalf("total %v", c.Total)
	}
}

func TestWriteJSON_EveryFigureHasAUnitAndEveryStackAValueOrAReason(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sampleReport(t)); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) == 0 || len(back.Failures) != 1 {
		t.Fatalf("%d results, %d failures", len(back.Results), len(back.Failures))
	}
	for _, res := range back.Results {
		if res.Unit == "" {
			t.Errorf("%s/%s has no unit", res.Test, res.Metric)
		}
		for _, v := range res.Stacks {
			if (v.Median == nil) == (v.NA == "") {
				t.Errorf("%s/%s/%s: median %v, na %q", res.Test, res.Metric, v.Stack, v.Median, v.NA)
			}
		}
	}
	if back.Settings.Duration.Unit != "s" || back.Elapsed.Value != 60 {
		t.Errorf("settings duration %+v, elapsed %+v", back.Settings.Duration, back.Elapsed)
	}
}

func TestWriteTable_ShowsSpreadRatiosFailuresAndReasons(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleReport(t)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"1100 (1000–1200)", "×0.50", "×kernel", "3 total", "n/a",
		"1 FAILURES", "round 1  gvisor  setup", "      second line", "kernel: no gateway process",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteTable_ColumnsLineUp(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleReport(t)); err != nil {
		t.Fatal(err)
	}
	// In every figure row, the custom column starts where its header does.
	lines := strings.Split(buf.String(), "\n")
	var col int
	for _, l := range lines {
		if strings.HasPrefix(l, "figure") {
			col = strings.Index(l, "custom")
			continue
		}
		if col > 0 && strings.HasPrefix(l, "  throughput") {
			cell := string([]rune(l)[col:])
			if !strings.HasPrefix(cell, "550") {
				t.Fatalf("custom column misaligned: %q", l)
			}
			return
		}
	}
	t.Fatal("no throughput row")
}

func TestWriteHTML_IsSelfContainedWithOneWellFormedChartPerFigure(t *testing.T) {
	r := sampleReport(t)
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, banned := range []string{"<script", "<link", " src=", "@import", "url("} {
		if strings.Contains(page, banned) {
			t.Errorf("page contains %q: not self-contained", banned)
		}
	}
	svgs := regexp.MustCompile(`(?s)<svg .*?</svg>`).FindAllString(page, -1)
	if len(svgs) != len(r.Results) {
		t.Fatalf("%d charts for %d figures", len(svgs), len(r.Results))
	}
	for _, s := range svgs {
		d := xml.NewDecoder(strings.NewReader(s))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("chart is not well-formed: %v\n%s", err, s)
			}
		}
	}
	for _, want := range []string{"×0.50 kernel", "gvisor, setup", "second line", "Upload, 1 stream", "2 rounds"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestBarChart_ScalesToTheLargestValueAndSkipsMissingOnes(t *testing.T) {
	res := *findResult(t, sampleReport(t), TestUpload1, mThroughput)
	c := barChart(res)
	if len(c.Bars) != 3 {
		t.Fatalf("%d bars", len(c.Bars))
	}
	k, cu, g := c.Bars[0], c.Bars[1], c.Bars[2]
	if k.WhiskerX2 != labelWidth+plotWidth {
		t.Errorf("the largest max should reach the end of the plot: %v", k.WhiskerX2)
	}
	if want := 550.0 / 1200 * plotWidth; cu.Width < want-0.01 || cu.Width > want+0.01 {
		t.Errorf("custom bar %v px, want %v", cu.Width, want)
	}
	if g.NA == "" || g.Width != 0 {
		t.Errorf("gvisor bar %+v, want n/a", g)
	}
}

func TestBarChart_AllZeroValuesStayInsideThePlot(t *testing.T) {
	c := barChart(*findResult(t, sampleReport(t), TestConnect, mFailed))
	for _, b := range c.Bars {
		if b.NA == "" && b.LabelX < labelWidth {
			t.Errorf("%s label at %v, inside the name column", b.Stack, b.LabelX)
		}
	}
}

func TestFormatNumber_AboutThreeSignificantDigits(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{{0, "0"}, {12345.6, "12346"}, {123.4, "123"}, {12.34, "12.3"}, {1.234, "1.23"}, {0.1234, "0.123"}, {0.001234, "0.0012"}} {
		if got := formatNumber(c.v); got != c.want {
			t.Errorf("formatNumber(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestFormatQuantity_WholeNumbersHaveNoDecimals(t *testing.T) {
	if got := formatQuantity(Quantity{3, "rounds"}); got != "3 rounds" {
		t.Errorf("got %q", got)
	}
	if got := formatQuantity(Quantity{0.4, "s"}); got != "0.400 s" {
		t.Errorf("got %q", got)
	}
}

func TestWriteTable_NamesTheInjectedFaults(t *testing.T) {
	o := Options{Gateway: gwproc.Command{Path: "/gw"}, Tests: []string{TestUpload1}, Faults: "loss=0.01"}.withDefaults()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := newRecorder(o, start)
	rec.add(StackCustom, TestUpload1, figures{mThroughput: 50})
	rep := rec.report(start.Add(time.Minute), Host{Kernel: "6.1", CPUs: Quantity{2, "cpus"}, GoVersion: "go1.26"})
	var buf bytes.Buffer
	if err := WriteTable(&buf, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "faults injected between each gateway's TUN and its stack: loss=0.01") {
		t.Errorf("table does not name the faults:\n%s", buf.String())
	}
	if rep.Settings.Faults != "loss=0.01" || !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "loss=0.01") }) {
		t.Errorf("report settings %+v, notes %q", rep.Settings, rep.Notes)
	}
	buf.Reset()
	if err := WriteTable(&buf, sampleReport(t)); err != nil || strings.Contains(buf.String(), "faults injected") {
		t.Errorf("a run without faults mentions them (%v):\n%s", err, buf.String())
	}
}
