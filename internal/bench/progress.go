package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress writes what the bench is doing, one line per test: the line
// starts when the test does and is completed with its result.
type progress struct {
	w            io.Writer
	start        time.Time
	steps, total int
}

func newProgress(w io.Writer, start time.Time, total int) *progress {
	return &progress{w: w, start: start, total: total}
}

func (p *progress) stamp() string {
	return fmt.Sprintf("[%6.1fs]", time.Since(p.start).Seconds())
}

// note prints a line of its own.
func (p *progress) note(format string, args ...any) {
	fmt.Fprintf(p.w, "%s %s\n", p.stamp(), fmt.Sprintf(format, args...))
}

// begin starts a test's line.
func (p *progress) begin(round, rounds int, stack, test string) {
	p.steps++
	fmt.Fprintf(p.w, "%s %3d/%d  round %d/%d  %-6s  %-13s  ", p.stamp(), p.steps, p.total, round, rounds, stack, test)
}

// end completes the line begin started.
func (p *progress) end(test string, f figures, err error) {
	var parts []string
	if f != nil {
		parts = append(parts, summarizeFigures(test, f))
	} else if err == nil {
		parts = append(parts, "n/a (no gateway process)")
	}
	if err != nil {
		parts = append(parts, "FAILED: "+firstLine(err.Error()))
	}
	fmt.Fprintln(p.w, strings.Join(parts, "  "))
}

// intervals prints the connect rate of each ConnectInterval of a test.
func (p *progress) intervals(rates []float64, interval time.Duration) {
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = formatNumber(r)
	}
	fmt.Fprintf(p.w, "%s           conn/s per %v: %s\n", p.stamp(), interval, strings.Join(parts, " "))
}

// interrupted completes the line of a test the run's cancellation cut
// short.
func (p *progress) interrupted() { fmt.Fprintln(p.w, "interrupted") }

// summarizeFigures is the short form of a test's figures for the
// progress line.
func summarizeFigures(test string, f figures) string {
	switch test {
	case TestMemory:
		return fmt.Sprintf("%s bytes/conn  (RSS %.1f → %.1f MiB)", formatNumber(f[mPerConn]), f[mRSSBase], f[mRSSIdle])
	case TestLatency:
		return fmt.Sprintf("p50 %sµs  p99 %sµs  p99.9 %sµs", formatNumber(f[mP50]), formatNumber(f[mP99]), formatNumber(f[mP999]))
	case TestConnect, TestConnectReuse:
		s := fmt.Sprintf("%s conn/s  %s stalled  %s failed", formatNumber(f[mRate]), formatNumber(f[mStalled]), formatNumber(f[mFailed]))
		if h, ok := f[mRateHold]; ok {
			s += fmt.Sprintf("  slowest/first %.2f", h)
		}
		return s
	case TestUDP:
		return fmt.Sprintf("%s datagrams/s  %s Mbit/s  loss %.1f%%", formatNumber(f[mDatagrams]), formatNumber(f[mMbit]), f[mLoss])
	}
	s := formatNumber(f[mThroughput]) + " MB/s"
	if v, ok := f[mGatewayCPU]; ok {
		s += fmt.Sprintf("  gateway %s s/GB", formatNumber(v))
	}
	return s + fmt.Sprintf("  machine %s s/GB", formatNumber(f[mMachineCPU]))
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
