package bench

import (
	"testing"
	"time"
)

func TestSummarize_OddCountTakesTheMiddleValue(t *testing.T) {
	s := Summarize([]float64{5, 1, 3})
	if s != (Summary{Median: 3, Min: 1, Max: 5, N: 3}) {
		t.Fatalf("got %+v", s)
	}
}

func TestSummarize_EvenCountAveragesTheMiddleTwo(t *testing.T) {
	s := Summarize([]float64{4, 1, 2, 10})
	if s.Median != 3 || s.Min != 1 || s.Max != 10 || s.N != 4 {
		t.Fatalf("got %+v", s)
	}
}

func TestSummarize_DoesNotReorderItsInput(t *testing.T) {
	xs := []float64{3, 1, 2}
	Summarize(xs)
	if xs[0] != 3 || xs[1] != 1 || xs[2] != 2 {
		t.Fatalf("input changed to %v", xs)
	}
}

func TestSummarize_EmptyIsTheZeroSummary(t *testing.T) {
	if s := Summarize(nil); s != (Summary{}) {
		t.Fatalf("got %+v", s)
	}
}

func TestSummary_SpreadIsHalfRangeOverMedian(t *testing.T) {
	if got := Summarize([]float64{90, 100, 110}).Spread(); got != 0.1 {
		t.Fatalf("spread %v, want 0.1", got)
	}
	if got := Summarize([]float64{0, 0}).Spread(); got != 0 {
		t.Fatalf("spread of zeros %v, want 0", got)
	}
}

func TestPercentile_NearestRank(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 1000; i++ {
		xs = append(xs, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 500}, {99, 990}, {99.9, 999}, {100, 1000}, {0.01, 1}} {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
}

func TestPercentile_FewSamplesGiveTheLargestForHighPercentiles(t *testing.T) {
	xs := []time.Duration{1, 2, 3}
	if got := Percentile(xs, 99.9); got != 3 {
		t.Fatalf("p99.9 of 3 samples = %v, want 3", got)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Fatalf("p50 of nothing = %v, want 0", got)
	}
}
