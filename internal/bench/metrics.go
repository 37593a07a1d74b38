package bench

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"
)

// metric defines one figure a test produces.
type metric struct {
	key, title, unit string
	// lowerBetter: smaller is better (latency, memory, CPU, failures).
	lowerBetter bool
	// gatewayOnly, when set, is why the kernel baseline has no figure.
	gatewayOnly string
	// total: a count whose sum over the rounds is reported too.
	total bool
}

// Figure keys.
const (
	mThroughput     = "throughput"
	mGatewayCPU     = "gateway_cpu_per_gb"
	mMachineCPU     = "machine_cpu_per_gb"
	mRate           = "rate"
	mFailed         = "failed"
	mStalled        = "stalled"
	mP50            = "p50"
	mP99            = "p99"
	mP999           = "p999"
	mRSSBase        = "rss_before"
	mRSSIdle        = "rss_idle"
	mHeapPerConn    = "heap_per_connection"
	mStackPerConn   = "stack_per_connection"
	mGoroutinesConn = "goroutines_per_connection"
	mRSSEnd         = "rss_end"
	mPerConn        = "per_connection"
	mGatewayCPUConn = "gateway_cpu_per_connection"
	mMachineCPUConn = "machine_cpu_per_connection"
	mRateFirst      = "rate_first_interval"
	mRateMin        = "rate_slowest_interval"
	mRateHold       = "rate_hold"
	mDatagrams      = "datagrams_per_second"
	mMbit           = "mbit_per_second"
	mLoss           = "loss"
)

const noGateway = "no gateway process: the kernel's own TCP has no separate process to measure"

var bulkMetrics = []metric{
	{key: mThroughput, title: "throughput", unit: "MB/s"},
	{key: mGatewayCPU, title: "gateway CPU per GB (user+sys)", unit: "s/GB", lowerBetter: true, gatewayOnly: noGateway},
	{key: mMachineCPU, title: "machine CPU per GB (all processes and kernel)", unit: "s/GB", lowerBetter: true},
}

// metricsOf lists the figures of a test.
func metricsOf(test string) []metric {
	switch test {
	case TestMemory:
		return []metric{
			{key: mPerConn, title: "gateway memory per idle connection", unit: "bytes", lowerBetter: true, gatewayOnly: noGateway},
			{key: mHeapPerConn, title: "of which Go heap in use (runtime.MemStats.HeapInuse)", unit: "bytes", lowerBetter: true, gatewayOnly: noGateway},
			{key: mStackPerConn, title: "of which goroutine stacks (StackInuse)", unit: "bytes", lowerBetter: true, gatewayOnly: noGateway},
			{key: mGoroutinesConn, title: "goroutines per idle connection", unit: "goroutines", lowerBetter: true, gatewayOnly: noGateway},
			{key: mRSSIdle, title: "gateway RSS with the idle connections", unit: "MiB", lowerBetter: true, gatewayOnly: noGateway},
			{key: mRSSBase, title: "gateway RSS before", unit: "MiB", lowerBetter: true, gatewayOnly: noGateway},
		}
	case TestLatency:
		return []metric{
			{key: mP50, title: "round trip p50", unit: "µs", lowerBetter: true},
			{key: mP99, title: "round trip p99", unit: "µs", lowerBetter: true},
			{key: mP999, title: "round trip p99.9", unit: "µs", lowerBetter: true},
		}
	case TestConnectReuse:
		return append(metricsOf(TestConnect), metric{key: mRSSEnd,
			title: "gateway RSS at the end (TIME-WAIT connections held)", unit: "MiB", lowerBetter: true, gatewayOnly: noGateway})
	case TestConnect:
		return []metric{
			{key: mRate, title: "connections per second", unit: "conn/s"},
			{key: mRateFirst, title: "connections per second, first interval", unit: "conn/s"},
			{key: mRateMin, title: "connections per second, slowest interval", unit: "conn/s"},
			{key: mRateHold, title: "slowest interval / first (1: the rate holds; 0: the first completed nothing)", unit: "ratio"},
			{key: mGatewayCPUConn, title: "gateway CPU per connection (user+sys)", unit: "µs", lowerBetter: true, gatewayOnly: noGateway},
			{key: mMachineCPUConn, title: "machine CPU per connection (all processes and kernel)", unit: "µs", lowerBetter: true},
			{key: mStalled, title: "stalled connects (SYN unanswered for 1 s or more)", unit: "connects", lowerBetter: true, total: true},
			{key: mFailed, title: "failed connections", unit: "connections", lowerBetter: true, total: true},
		}
	case TestUDP:
		return []metric{
			{key: mDatagrams, title: "datagrams received per second", unit: "datagrams/s"},
			{key: mMbit, title: "payload received", unit: "Mbit/s"},
			{key: mLoss, title: "loss (sent but not received)", unit: "%", lowerBetter: true},
			{key: mMachineCPU, title: "machine CPU per GB received (all processes and kernel)", unit: "s/GB", lowerBetter: true},
		}
	default:
		return bulkMetrics
	}
}

// workloadTitle describes a test with the run's parameters.
func workloadTitle(test string, o Options) string {
	switch test {
	case TestMemory:
		return fmt.Sprintf("Memory: %d idle connections", o.IdleConns)
	case TestLatency:
		return fmt.Sprintf("Latency: %d-byte ping-pong on one kept connection", o.LatencyPayload)
	case TestConnect:
		return fmt.Sprintf("Connect rate: connect, request, reply, close (%d clients)", o.ConnectWorkers)
	case TestConnectReuse:
		return fmt.Sprintf("Connect rate through TIME-WAIT: request, reply, the server closes first; %d client ports reused (%d clients)", o.ReusePorts, o.ConnectWorkers)
	case TestUpload1:
		return "Upload, 1 stream (app → server)"
	case TestDownload1:
		return "Download, 1 stream (server → app)"
	case TestUploadN:
		return fmt.Sprintf("Upload, %d streams (app → server)", o.Streams)
	case TestDownloadN:
		return fmt.Sprintf("Download, %d streams (server → app)", o.Streams)
	case TestUDP:
		return fmt.Sprintf("UDP: %d-byte datagrams from one app socket as fast as it can send (app → server)", udpDatagram)
	}
	return test
}

// figureKey identifies the values of one figure on one stack.
type figureKey struct{ test, metric, stack string }

// recorder collects the figures and failures of a run. It is used by the
// run's goroutine only.
type recorder struct {
	opts     Options
	started  time.Time
	values   map[figureKey][]float64
	failures []Failure
}

func newRecorder(o Options, started time.Time) *recorder {
	return &recorder{opts: o, started: started, values: make(map[figureKey][]float64)}
}

func (r *recorder) add(stack, test string, figures map[string]float64) {
	for m, v := range figures {
		k := figureKey{test, m, stack}
		r.values[k] = append(r.values[k], v)
	}
}

func (r *recorder) fail(stack, test string, round int, err error) {
	r.failures = append(r.failures, Failure{Stack: stack, Test: test, Round: round, Error: err.Error()})
}

// report builds the Report of what has been recorded so far.
func (r *recorder) report(now time.Time, host Host) *Report {
	o := r.opts
	rep := &Report{
		Tool:     "gateway bench",
		Started:  r.started,
		Elapsed:  Quantity{round3(now.Sub(r.started).Seconds()), "s"},
		Host:     host,
		Settings: settingsOf(o),
		Failures: slices.Clone(r.failures),
		Notes:    notes(o),
	}
	if rep.Failures == nil {
		rep.Failures = []Failure{}
	}
	for _, test := range o.Tests {
		for _, m := range metricsOf(test) {
			rep.Results = append(rep.Results, r.result(test, m))
		}
	}
	return rep
}

func (r *recorder) result(test string, m metric) Result {
	res := Result{
		Test: test, Workload: workloadTitle(test, r.opts),
		Metric: m.key, Title: m.title, Unit: m.unit, Better: "higher",
	}
	if m.lowerBetter {
		res.Better = "lower"
	}
	for _, stack := range r.opts.Stacks {
		res.Stacks = append(res.Stacks, r.stackValue(test, m, stack))
	}
	k := res.value(StackKernel)
	for i := range res.Stacks {
		v := &res.Stacks[i]
		if k != nil && k.Median != nil && *k.Median != 0 && v.Median != nil {
			v.RatioToKernel = ptr(round3(*v.Median / *k.Median))
		}
	}
	return res
}

func (r *recorder) stackValue(test string, m metric, stack string) StackValue {
	v := StackValue{Stack: stack}
	if stack == StackKernel && m.gatewayOnly != "" {
		v.NA = m.gatewayOnly
		return v
	}
	xs := r.values[figureKey{test, m.key, stack}]
	if len(xs) == 0 {
		v.NA = "no round completed"
		if m.key == mGatewayCPUConn || m.key == mMachineCPUConn {
			v.NA = "no connection completed in any round"
		}
		return v
	}
	s := Summarize(xs)
	v.Median, v.Min, v.Max = ptr(round3(s.Median)), ptr(round3(s.Min)), ptr(round3(s.Max))
	for _, x := range xs {
		v.Rounds = append(v.Rounds, round3(x))
	}
	if m.total {
		var sum float64
		for _, x := range xs {
			sum += x
		}
		v.Total = ptr(sum)
	}
	return v
}

func settingsOf(o Options) Settings {
	return Settings{
		Stacks:          o.Stacks,
		Tests:           o.Tests,
		Quick:           o.Quick,
		Duration:        Quantity{o.Duration.Seconds(), "s"},
		ConnectDuration: Quantity{o.ConnectDuration.Seconds(), "s"},
		ConnectInterval: Quantity{o.ConnectInterval.Seconds(), "s"},
		Warmup:          Quantity{o.warmup().Seconds(), "s"},
		Rounds:          Quantity{float64(o.Rounds), "rounds"},
		MTU:             Quantity{float64(o.MTU), "bytes"},
		Streams:         Quantity{float64(o.Streams), "streams"},
		IdleConns:       Quantity{float64(o.IdleConns), "connections"},
		ConnectWorkers:  Quantity{float64(o.ConnectWorkers), "clients"},
		ReusePorts:      Quantity{float64(o.ReusePorts), "ports"},
		Faults:          o.Faults,
		Offload:         o.Offload,
		Queues:          o.Queues,
		API:             o.API,
		LatencyPayload:  Quantity{float64(o.LatencyPayload), "bytes"},
	}
}

func notes(o Options) []string {
	var faults []string
	if o.Faults != "" {
		faults = append(faults, "Faults ("+o.Faults+") were injected between each gateway's TUN and its stack; the kernel baseline ran without them, so compare the gateways with each other, not with it.")
	}
	return append(faults, []string{
		"Each figure is the median over the rounds; the spread is the minimum and maximum.",
		fmt.Sprintf("Timed tests run a %v warm-up, then measure for %v; the connect tests measure for %v and report the rate of every %v of it as well (the progress lines list them), the first and the slowest.", o.warmup(), o.Duration, o.ConnectDuration, o.ConnectInterval),
		"MB/s is 10^6 bytes per second of payload, counted by the receiver.",
		"Gateway CPU is the gateway process's user+system time (/proc/PID/stat); the kernel baseline has no such process.",
		"Machine CPU is the busy time of all CPUs (/proc/stat): clients, servers, gateway and the kernel's network processing, so it is comparable across stacks but includes anything else the machine ran meanwhile.",
		"Memory is the gateway's resident set size (VmRSS) before and after opening the idle connections, each of which exchanged one byte first.",
		"The connect test's clients close first, as most clients do, and reuse ports from the kernel's ephemeral range.",
		fmt.Sprintf("In connect-reuse the server closes first, so the gateway holds TIME-WAIT toward the client (60 s on both stacks); the clients' ephemeral range is set to %d ports ending at 60999 (Linux's default range has 28232) and the warm-up lasts until each has been used once (at most %v), so every measured SYN reuses a 4-tuple in the gateway's TIME-WAIT. A stack that cannot reopen a connection from TIME-WAIT drops those SYNs until it ends: its clients stall, which is counted, not failed. The gateway's RSS at the end includes the connections it holds in TIME-WAIT and the garbage collector's slack.", o.ReusePorts, maxReuseWarmup),
	}...)
}

// hostInfo describes this machine.
func hostInfo() Host {
	return Host{
		Kernel:     kernelRelease(),
		CPUs:       Quantity{float64(runtime.NumCPU()), "cpus"},
		GOMAXPROCS: Quantity{float64(runtime.GOMAXPROCS(0)), "threads"},
		GoVersion:  runtime.Version(),
	}
}

func ptr[T any](v T) *T { return &v }

// round3 keeps three decimals: enough for every figure, and JSON stays
// readable.
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
