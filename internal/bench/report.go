package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Quantity is a number with its unit.
type Quantity struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Report is the outcome of a bench run, ready for WriteTable, WriteJSON
// and WriteHTML. Every number in it carries its unit: Quantity values,
// or Result.Unit for the figures of a Result.
type Report struct {
	Tool     string    `json:"tool"`
	Started  time.Time `json:"started"`
	Elapsed  Quantity  `json:"elapsed"`
	Host     Host      `json:"host"`
	Settings Settings  `json:"settings"`
	Results  []Result  `json:"results"`
	Failures []Failure `json:"failures"`
	// Interrupted is set when the run was cancelled before it finished;
	// the results hold the rounds that completed.
	Interrupted bool `json:"interrupted,omitempty"`
	// Notes explain how figures were measured.
	Notes []string `json:"notes"`
}

// Host describes the machine the figures come from.
type Host struct {
	Kernel     string   `json:"kernel"`
	CPUs       Quantity `json:"cpus"`
	GOMAXPROCS Quantity `json:"gomaxprocs"`
	GoVersion  string   `json:"go_version"`
}

// Settings are the options the run used.
type Settings struct {
	Stacks          []string `json:"stacks"`
	Tests           []string `json:"tests"`
	Quick           bool     `json:"quick"`
	Duration        Quantity `json:"duration"`
	ConnectDuration Quantity `json:"connect_duration"`
	ConnectInterval Quantity `json:"connect_interval"`
	Warmup          Quantity `json:"warmup"`
	Rounds          Quantity `json:"rounds"`
	MTU             Quantity `json:"mtu"`
	Streams         Quantity `json:"streams"`
	IdleConns       Quantity `json:"idle_connections"`
	ConnectWorkers  Quantity `json:"connect_workers"`
	ReusePorts      Quantity `json:"reuse_ports"`
	LatencyPayload  Quantity `json:"latency_payload"`
	// Faults is the fault spec the gateways injected; empty: none.
	Faults string `json:"faults,omitempty"`
	// Offload is the gateways' tun.offload when the run set it.
	Offload string `json:"offload,omitempty"`
	// Queues is the gateways' tun.queues when the run set it.
	Queues string `json:"queues,omitempty"`
	// API reports that the gateways ran with their HTTP API on.
	API bool `json:"api,omitempty"`
}

// Result is one figure of one workload, for every stack.
type Result struct {
	// Test is the test name (see AllTests); Workload describes it.
	Test     string `json:"test"`
	Workload string `json:"workload"`
	// Metric names the figure; Title describes it.
	Metric string `json:"metric"`
	Title  string `json:"title"`
	// Unit applies to Median, Min, Max, Total and Rounds of every stack.
	Unit string `json:"unit"`
	// Better is "higher" or "lower".
	Better string       `json:"better"`
	Stacks []StackValue `json:"stacks"`
}

// StackValue is a Result's figure for one stack. When NA is set there is
// no figure, and NA says why.
type StackValue struct {
	Stack  string    `json:"stack"`
	Median *float64  `json:"median,omitempty"`
	Min    *float64  `json:"min,omitempty"`
	Max    *float64  `json:"max,omitempty"`
	Total  *float64  `json:"total,omitempty"`
	Rounds []float64 `json:"rounds,omitempty"`
	// RatioToKernel is Median divided by the kernel's median (unit
	// "×kernel"); absent without a kernel figure.
	RatioToKernel *float64 `json:"ratio_to_kernel,omitempty"`
	NA            string   `json:"na,omitempty"`
}

// Failure is something that went wrong in one test of one round.
type Failure struct {
	Stack string `json:"stack"`
	Test  string `json:"test"`
	Round int    `json:"round"`
	Error string `json:"error"`
}

// WriteJSON writes r as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("bench: json: %w", err)
	}
	return nil
}

// value returns the stack's entry of res, or nil.
func (res *Result) value(stack string) *StackValue {
	for i := range res.Stacks {
		if res.Stacks[i].Stack == stack {
			return &res.Stacks[i]
		}
	}
	return nil
}
