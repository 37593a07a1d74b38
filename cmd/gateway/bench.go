package main

import (
	"github.com/tungate/tungate/tun/faulty"

	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tungate/tungate/internal/bench"
	"github.com/tungate/tungate/internal/gwproc"
)

// benchFlags are the flags of "gateway bench".
type benchFlags struct {
	stacks, tests []string
	duration      time.Duration
	connDuration  time.Duration
	rounds        int
	quick         bool
	mtu           int
	streams       int
	idleConns     int
	connClients   int
	reusePorts    int
	faults        string
	offload       string
	queues        string
	api           bool
	jsonFile      string
	htmlFile      string
	cpuProfile    string
	memProfile    string
}

func (a *app) newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench [--quick] [--stacks kernel,custom,gvisor] [--tests ...] [--json FILE] [--html FILE]",
		Short: "Compare the gateway's stacks with kernel TCP on a throwaway topology",
		Long: `Bench builds a throwaway topology (client namespace → TUN → gateway →
veth → server namespace, all addresses in 198.18.0.0/15) and measures, on
each stack in turn with everything else identical:

  kernel   the same client and server connected over the veth, no gateway
  custom   the gateway with the own TCP engine
  gvisor   the gateway with the gVisor netstack

Tests: memory (gateway RSS with idle connections), latency (ping-pong on a
kept connection: p50, p99, p99.9), connect (connect, request, reply, close
in a loop), connect-reuse (the same with the server closing first, so that
every SYN reuses a 4-tuple the gateway holds in TIME-WAIT), upload-1,
download-1, upload-n, download-n (bulk throughput with CPU seconds per GB).
--faults makes every gateway inject seeded loss, duplication, reordering
or delay between its TUN and its stack. Every test runs for --rounds
rounds; the table shows the median, the spread and the ratio to kernel.

Progress goes to standard error, the table to standard output. Needs root.
Everything the bench starts is removed when it ends, also on Ctrl-C.

Exit status: 0 when every test passed, 1 on a failure or interruption, 2 on
a usage error.`,
		Args:                  usageArgs(cobra.NoArgs),
		RunE:                  func(cmd *cobra.Command, _ []string) error { return a.runBench(cmd, f) },
		DisableFlagsInUseLine: true,
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&f.stacks, "stacks", bench.AllStacks(), "stacks to compare: kernel, custom, gvisor")
	fs.StringSliceVar(&f.tests, "tests", []string{"all"}, "tests to run: all, or any of "+fmt.Sprint(bench.AllTests()))
	fs.DurationVar(&f.duration, "duration", bench.DefaultDuration, fmt.Sprintf("measured time of each timed test per round (--quick: %v)", bench.QuickDuration))
	fs.DurationVar(&f.connDuration, "connect-duration", bench.DefaultConnectDuration, fmt.Sprintf("measured time of the connect tests, reported per %v (--quick: %v)", bench.DefaultConnectInterval, bench.QuickDuration))
	fs.IntVar(&f.rounds, "rounds", bench.DefaultRounds, fmt.Sprintf("rounds of every test on every stack (--quick: %d)", bench.QuickRounds))
	fs.BoolVar(&f.quick, "quick", false, "short run for a smoke test: under a minute in all")
	fs.IntVar(&f.mtu, "mtu", bench.DefaultMTU, "MTU of the veth pair and the gateway's TUN")
	fs.IntVar(&f.streams, "streams", bench.DefaultStreams, "N of the multi-stream bulk tests")
	fs.IntVar(&f.idleConns, "idle-conns", bench.DefaultIdleConns, fmt.Sprintf("idle connections of the memory test (--quick: %d)", bench.QuickIdleConns))
	fs.IntVar(&f.connClients, "connect-clients", 0, "concurrent clients of the connect test (default: 2 per CPU)")
	fs.IntVar(&f.reusePorts, "reuse-ports", bench.DefaultReusePorts, fmt.Sprintf("client ports of the connect-reuse test, a range ending at 60999 (--quick: %d)", bench.QuickReusePorts))
	fs.StringVar(&f.offload, "offload", "", "every gateway's tun.offload, `auto` or off (default: the gateway's own, auto)")
	fs.StringVar(&f.queues, "queues", "", "every gateway's tun.queues, `auto` or a count (default: the gateway's own, auto)")
	fs.BoolVar(&f.api, "api", false, "run every gateway with its HTTP API on (api.listen on a unix socket, every connection's ladder recorded), to measure what that costs")
	fs.StringVar(&f.faults, "faults", "", "make each gateway inject seeded faults between its TUN and its stack, as gateway run --faults does; `SPEC` keys: "+faulty.SpecKeys)
	fs.StringVar(&f.jsonFile, "json", "", "also write the results as JSON to this `file`")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "make each gateway write a CPU profile to `PREFIX`-<stack>-round<N>.prof")
	fs.StringVar(&f.memProfile, "memprofile", "", "keep the heap profile each gateway writes in the memory test at `PREFIX`-<stack>-round<N>.heap (go tool pprof)")
	fs.StringVar(&f.htmlFile, "html", "", "also write a self-contained HTML report with charts to this `file`")
	return cmd
}

func (a *app) runBench(cmd *cobra.Command, f benchFlags) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("bench: finding the gateway binary: %w", err)
	}
	opts := bench.Options{
		Gateway:    gwproc.Command{Path: exe},
		Stacks:     f.stacks,
		Tests:      f.tests,
		Quick:      f.quick,
		MTU:        f.mtu,
		Streams:    f.streams,
		Progress:   a.stderr,
		CPUProfile: f.cpuProfile,
		MemProfile: f.memProfile,
		Faults:     f.faults,
		Offload:    f.offload,
		Queues:     f.queues,
		API:        f.api,
	}
	// Flags left alone take the defaults of the mode (full or quick).
	fl := cmd.Flags()
	if fl.Changed("duration") {
		opts.Duration = f.duration
	}
	if fl.Changed("connect-duration") {
		opts.ConnectDuration = f.connDuration
	}
	if fl.Changed("rounds") {
		opts.Rounds = f.rounds
	}
	if fl.Changed("idle-conns") {
		opts.IdleConns = f.idleConns
	}
	if fl.Changed("reuse-ports") {
		opts.ReusePorts = f.reusePorts
	}
	if fl.Changed("connect-clients") {
		opts.ConnectWorkers = f.connClients
	}
	if err := givenPositive(fl, map[string]bool{
		"duration": f.duration > 0, "connect-duration": f.connDuration > 0, "rounds": f.rounds > 0, "idle-conns": f.idleConns > 0,
		"connect-clients": f.connClients > 0, "reuse-ports": f.reusePorts > 0,
		"streams": f.streams > 0, "mtu": f.mtu > 0,
	}); err != nil {
		return usageError(err)
	}
	if err := opts.Validate(); err != nil {
		return usageError(err)
	}
	if os.Geteuid() != 0 {
		return errors.New("bench: needs root (network namespaces, a TUN device)")
	}
	// Open the output files first: a typo in a path should not cost a run.
	outs, err := openOutputs(f.jsonFile, f.htmlFile)
	if err != nil {
		return err
	}
	defer outs.close()

	logger := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := a.cancelOnSignal(cmd.Context(), logger)
	defer stop()
	rep, runErr := bench.Run(ctx, opts)
	if rep == nil {
		return runErr
	}
	fmt.Fprintln(a.stderr)
	if err := bench.WriteTable(a.stdout, rep); err != nil {
		return err
	}
	if err := outs.write(rep); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	switch n := len(rep.Failures); n {
	case 0:
	case 1:
		return errors.New("bench: 1 failure (listed above)")
	default:
		return fmt.Errorf("bench: %d failures (listed above)", n)
	}
	return nil
}

// givenPositive rejects flags that were given a value that is not
// positive: zero would otherwise silently mean "the default".
func givenPositive(fl *pflag.FlagSet, ok map[string]bool) error {
	var errs []error
	fl.Visit(func(f *pflag.Flag) {
		if good, checked := ok[f.Name]; checked && !good {
			errs = append(errs, fmt.Errorf("bench: --%s must be positive", f.Name))
		}
	})
	return errors.Join(errs...)
}

// benchOutputs are the report files asked for; nil files are not wanted.
type benchOutputs struct {
	json, html *os.File
}

func openOutputs(jsonPath, htmlPath string) (*benchOutputs, error) {
	o := &benchOutputs{}
	var err error
	if jsonPath != "" {
		if o.json, err = os.Create(jsonPath); err != nil {
			return nil, fmt.Errorf("bench: --json: %w", err)
		}
	}
	if htmlPath != "" {
		if o.html, err = os.Create(htmlPath); err != nil {
			o.close()
			return nil, fmt.Errorf("bench: --html: %w", err)
		}
	}
	return o, nil
}

func (o *benchOutputs) write(rep *bench.Report) error {
	if o.json != nil {
		if err := bench.WriteJSON(o.json, rep); err != nil {
			return err
		}
		if err := o.json.Close(); err != nil {
			return fmt.Errorf("bench: --json: %w", err)
		}
		o.json = nil
	}
	if o.html != nil {
		if err := bench.WriteHTML(o.html, rep); err != nil {
			return err
		}
		if err := o.html.Close(); err != nil {
			return fmt.Errorf("bench: --html: %w", err)
		}
		o.html = nil
	}
	return nil
}

// close closes what write has not.
func (o *benchOutputs) close() {
	for _, f := range []*os.File{o.json, o.html} {
		if f != nil {
			f.Close()
		}
	}
}

// newBenchEchoCmd is the memory test's echo server, which the bench starts
// in its server namespace as a process of its own (see bench.ServeEcho).
func (a *app) newBenchEchoCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    bench.EchoCommand + " --listen ADDR",
		Short:  "Echo server for gateway bench (internal)",
		Hidden: true,
		Args:   usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			return bench.ServeEcho(listen, os.Stdin, a.stdout)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on")
	return cmd
}
