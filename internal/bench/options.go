package bench

import (
	"github.com/tungate/tungate/internal/gwproc"
	"github.com/tungate/tungate/tun/faulty"

	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Stack names accepted in Options.Stacks. StackKernel is the baseline
// without a gateway; the others are `gateway run --stack` kinds.
const (
	StackKernel = "kernel"
	StackCustom = "custom"
	StackGVisor = "gvisor"
)

// AllStacks returns the default stack list, in display order.
func AllStacks() []string { return []string{StackKernel, StackCustom, StackGVisor} }

// Test names accepted in Options.Tests, in the order a round runs them:
// the memory test comes first, on a freshly started gateway, so that the
// heap the other tests grew does not hide the cost of idle connections.
const (
	TestMemory       = "memory"
	TestLatency      = "latency"
	TestConnect      = "connect"
	TestConnectReuse = "connect-reuse"
	TestUpload1      = "upload-1"
	TestDownload1    = "download-1"
	TestUploadN      = "upload-n"
	TestDownloadN    = "download-n"
	TestUDP          = "udp"
	testsAllKeyword  = "all"
)

// AllTests returns every test name in run order.
func AllTests() []string {
	return []string{TestMemory, TestLatency, TestConnect, TestConnectReuse, TestUpload1, TestDownload1, TestUploadN, TestDownloadN, TestUDP}
}

// Defaults for a full run and for a quick one (Options.Quick).
const (
	DefaultDuration = 2 * time.Second
	// DefaultConnectDuration is twelve DefaultConnectIntervals.
	DefaultConnectDuration = 60 * time.Second
	// DefaultConnectInterval is the span of each rate the connect tests report
	// on the way.
	DefaultConnectInterval = 5 * time.Second
	DefaultRounds          = 3
	DefaultStreams         = 4
	DefaultIdleConns       = 1000
	DefaultMTU             = 1500
	DefaultLatencyPayload  = 64
	// DefaultReusePorts is the size of Linux's default ephemeral port
	// range, 32768–60999.
	DefaultReusePorts = 28232

	QuickDuration   = 400 * time.Millisecond
	QuickRounds     = 3
	QuickIdleConns  = 200
	QuickReusePorts = 2048

	// maxWarmup bounds the unmeasured start of every timed test.
	maxWarmup = time.Second
)

// Options configure Run. Zero fields take the defaults (the quick ones
// when Quick is set).
type Options struct {
	Gateway gwproc.Command
	// Stacks to compare, from AllStacks; empty means all of them.
	Stacks []string
	// Tests to run, from AllTests (or "all"); empty means all of them.
	Tests []string
	// Duration is the measured time of each timed test in each round; a
	// warm-up of a quarter of it (at most a second) comes before.
	Duration time.Duration
	// ConnectDuration is the measured time of the connect tests, whose
	// rate is also reported per ConnectInterval: a rate that holds for a
	// minute is what a server sees, a burst of two seconds is not.
	ConnectDuration time.Duration
	// ConnectInterval is the span of each of those rates; zero means
	// DefaultConnectInterval.
	ConnectInterval time.Duration
	// Rounds is how often every test runs on every stack.
	Rounds int
	// Quick selects short defaults so that a whole run takes under a
	// minute on a small machine.
	Quick bool
	// MTU of the veth pair and of the gateway's TUN.
	MTU int
	// Streams is N of the multi-stream bulk tests.
	Streams int
	// IdleConns is the number of idle connections of the memory test.
	IdleConns int
	// ConnectWorkers is the number of concurrent clients of the connect
	// test; zero means 2×GOMAXPROCS.
	ConnectWorkers int
	// ReusePorts is the size of the client's ephemeral port range in the
	// connect-reuse test; the range ends at 60999, as Linux's default.
	ReusePorts int
	// LatencyPayload is the size of each ping and pong of the latency
	// test, in bytes.
	LatencyPayload int
	// Faults, when set, is a tun/faulty spec (loss, dup, reorder, delay,
	// seed; see faulty.SpecKeys) that every gateway injects between its
	// TUN and its stack, as `gateway run --faults` does. The kernel
	// baseline has no gateway and runs without them.
	Faults string
	// Offload, when set, is every gateway's tun.offload (auto or off);
	// empty leaves the gateway's default (auto).
	Offload string
	// Queues, when set, is every gateway's tun.queues (auto or a count).
	Queues string
	// API runs every gateway with its HTTP API on (api.listen on a unix
	// socket), which records every connection's ladder: what operating
	// with the API costs.
	API bool
	// CPUProfile, when set, makes every gateway process write a CPU
	// profile to CPUProfile-<stack>-round<N>.prof.
	CPUProfile string
	// MemProfile, when set, keeps the heap profile every gateway writes
	// when the memory test asks for its figures, at
	// MemProfile-<stack>-round<N>.heap; otherwise it goes to a temporary
	// file removed with the gateway.
	MemProfile string
	// Progress receives one line per step while the bench runs; nil
	// discards them.
	Progress io.Writer
	// Logger receives debug details; nil discards them.
	Logger *slog.Logger
}

// withDefaults returns o with every zero field set and the lists
// normalised (lower case, "all" expanded, run order).
func (o Options) withDefaults() Options {
	if o.Duration == 0 {
		o.Duration = pick(o.Quick, QuickDuration, DefaultDuration)
	}
	if o.ConnectDuration == 0 {
		o.ConnectDuration = pick(o.Quick, QuickDuration, DefaultConnectDuration)
	}
	if o.ConnectInterval == 0 {
		o.ConnectInterval = DefaultConnectInterval
	}
	if o.Rounds == 0 {
		o.Rounds = pick(o.Quick, QuickRounds, DefaultRounds)
	}
	if o.IdleConns == 0 {
		o.IdleConns = pick(o.Quick, QuickIdleConns, DefaultIdleConns)
	}
	if o.ReusePorts == 0 {
		o.ReusePorts = pick(o.Quick, QuickReusePorts, DefaultReusePorts)
	}
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.Streams == 0 {
		o.Streams = DefaultStreams
	}
	if o.ConnectWorkers == 0 {
		o.ConnectWorkers = 2 * runtime.GOMAXPROCS(0)
	}
	if o.LatencyPayload == 0 {
		o.LatencyPayload = DefaultLatencyPayload
	}
	o.Stacks = normalise(o.Stacks, AllStacks(), "")
	o.Tests = normalise(o.Tests, AllTests(), testsAllKeyword)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

func pick[T any](quick bool, q, full T) T {
	if quick {
		return q
	}
	return full
}

// normalise lower-cases names, expands the empty list and the all keyword
// to every known name, drops duplicates and sorts the known names into
// the order of known; unknown names are kept at the end for Validate.
func normalise(names, known []string, all string) []string {
	if len(names) == 0 {
		return slices.Clone(known)
	}
	seen := make(map[string]bool)
	var unknown []string
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == all && all != "" {
			return slices.Clone(known)
		}
		if !seen[n] && !slices.Contains(known, n) {
			unknown = append(unknown, n)
		}
		seen[n] = true
	}
	var out []string
	for _, k := range known {
		if seen[k] {
			out = append(out, k)
		}
	}
	return append(out, unknown...)
}

// Validate reports every problem with o (after defaults), joined.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	for _, s := range o.Stacks {
		if !slices.Contains(AllStacks(), s) {
			errs = append(errs, fmt.Errorf("bench: unknown stack %q (want %s)", s, strings.Join(AllStacks(), ", ")))
		}
	}
	for _, t := range o.Tests {
		if !slices.Contains(AllTests(), t) {
			errs = append(errs, fmt.Errorf("bench: unknown test %q (want %s or all)", t, strings.Join(AllTests(), ", ")))
		}
	}
	if o.Gateway.Path == "" && slices.ContainsFunc(o.Stacks, func(s string) bool { return s != StackKernel }) {
		errs = append(errs, errors.New("bench: no gateway binary to run"))
	}
	errs = append(errs, positive("duration", o.Duration > 0), positive("connect duration", o.ConnectDuration > 0),
		positive("connect interval", o.ConnectInterval > 0),
		positive("rounds", o.Rounds > 0),
		positive("streams", o.Streams > 0), positive("idle connections", o.IdleConns > 0),
		positive("connect workers", o.ConnectWorkers > 0), positive("latency payload", o.LatencyPayload > 0))
	if lo := reusePortsEnd - o.ReusePorts + 1; o.ReusePorts < 16 || lo < 1024 {
		errs = append(errs, fmt.Errorf("bench: reuse ports %d out of range 16–%d (the range ends at %d)", o.ReusePorts, reusePortsEnd-1023, reusePortsEnd))
	}
	if o.Offload != "" && o.Offload != "auto" && o.Offload != "off" {
		errs = append(errs, fmt.Errorf("bench: offload %q: want auto or off", o.Offload))
	}
	if o.Faults != "" {
		if _, err := faulty.ParseSpec(o.Faults); err != nil {
			errs = append(errs, fmt.Errorf("bench: faults: %w", err))
		}
	}
	if o.MTU < 576 || o.MTU > 65535 {
		errs = append(errs, fmt.Errorf("bench: mtu %d out of range 576–65535", o.MTU))
	}
	return errors.Join(errs...)
}

func positive(what string, ok bool) error {
	if ok {
		return nil
	}
	return fmt.Errorf("bench: %s must be positive", what)
}

// warmup is the unmeasured start of a timed test.
func (o Options) warmup() time.Duration { return min(o.Duration/4, maxWarmup) }
