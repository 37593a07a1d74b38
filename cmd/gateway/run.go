package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"sync"

	"github.com/spf13/cobra"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/gateway"
)

// runFlags are the flags of "gateway run" that are not config keys.
type runFlags struct {
	configFile string
	pcap       string
	trace      string
	faults     string
	cpuProfile string
	memProfile string
}

func (a *app) newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [--config FILE] [--stack KIND] [--pcap FILE] [--trace FILTER] [flags]",
		Short: "Run the gateway until SIGINT or SIGTERM",
		Long: `Run brings up the TUN device and the stack from the configuration and
relays flows until SIGINT or SIGTERM, then shuts down cleanly. A second
signal during shutdown exits at once.

With --auto-route (tun.auto_route) it also captures the machine's traffic
into the TUN by policy routing, and removes every rule and route it added
when it stops; "gateway route plan" shows them, "gateway cleanup" removes
what a killed run left behind (the next run does that by itself too).

Settings come from, highest precedence first: the flags below that were
given, TUNGATE_* environment variables (TUNGATE_TUN_MTU for tun.mtu), the
--config file, and the built-in defaults. See configs/gateway.yaml.`,
		Args:                  usageArgs(cobra.NoArgs),
		RunE:                  func(cmd *cobra.Command, _ []string) error { return a.runGateway(cmd, f) },
		DisableFlagsInUseLine: true,
	}
	fs := cmd.Flags()
	fs.StringVarP(&f.configFile, "config", "c", "", "YAML config `file`")
	fs.StringVar(&f.pcap, "pcap", "", "write every packet read from or written to the TUN to this pcap `file`")
	fs.StringVar(&f.trace, "trace", "", "print packets and state changes of matching connections: a port, an address or addr:port")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this `file` (go tool pprof)")
	fs.StringVar(&f.memProfile, "memprofile", "", "on SIGUSR1, write a heap profile to this `file` and log the memory in use (heap, goroutine stacks, goroutines)")
	fs.StringVar(&f.faults, "faults", "", "inject seeded faults between the TUN and the stack, for testing: e.g. `loss=0.01,dup=0.005,reorder=0.02,seed=1`")
	config.RegisterFlags(fs)
	return cmd
}

func (a *app) runGateway(cmd *cobra.Command, f runFlags) error {
	cfg, err := a.loadConfig(f.configFile, cmd)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	logger := newLogger(a.stderr, cfg.Log, level)
	ctx, stop := a.cancelOnSignal(cmd.Context(), logger)
	defer stop()
	reload, stopReload := a.reloadOnSignal(logger)
	defer stopReload()
	if f.cpuProfile != "" {
		stopProfile, err := startCPUProfile(f.cpuProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	if f.memProfile != "" {
		defer memProfileOnSignal(f.memProfile, logger)()
	}
	err = a.serve(ctx, cfg, gateway.Options{PcapPath: f.pcap, Trace: f.trace, Faults: f.faults, Logger: logger,
		LogLevel: level, Version: version, Reload: reload,
		Load: func() (*config.Config, error) {
			a.notifyState(logger, "RELOADING=1")
			defer a.notifyState(logger, "READY=1")
			return a.loadConfig(f.configFile, cmd)
		},
		Ready: func() { a.notifyState(logger, "READY=1") },
	})
	a.notifyState(logger, "STOPPING=1")
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // shut down as asked
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		// The host's state refused the configuration (auto_route's table,
		// priorities or mark in use): a configuration error.
		return &exitError{code: exitUsage, err: err}
	}
	return err
}

// newLogger builds the gateway's logger at level, set here to cfg's (a
// reload may change it); cfg has been validated, so the level and format
// are known.
func newLogger(w io.Writer, cfg config.Log, level *slog.LevelVar) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(cfg.Level)); err != nil {
		l = slog.LevelInfo
	}
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// cancelOnSignal returns a context cancelled by the first SIGINT or
// SIGTERM; a second one ends the process at once, for a shutdown that
// hangs. signal.NotifyContext cannot see the second signal, hence the own
// channel. stop ends the signal handling and waits for its goroutine.
func (a *app) cancelOnSignal(parent context.Context, logger *slog.Logger) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	a.notify(sigs)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case sig := <-sigs:
			logger.Info("shutting down; signal again to exit at once", "signal", sig.String())
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			fmt.Fprintf(a.stderr, "gateway: second signal (%v), exiting without a clean shutdown\n", sig)
			a.exit(exitFailure)
		case <-done:
		}
	})
	return ctx, func() {
		a.stopNotify(sigs)
		close(done)
		wg.Wait()
		cancel()
	}
}

// reloadOnSignal returns a channel that receives once per SIGHUP (a
// burst of them is one reload), and a stop function.
func (a *app) reloadOnSignal(logger *slog.Logger) (<-chan struct{}, func()) {
	reload := make(chan struct{}, 1)
	if a.notifyReload == nil {
		return reload, func() {}
	}
	return reload, onEachSignal(a.notifyReload, a.stopNotify, func() {
		logger.Info("reloading the configuration", "signal", "hangup")
		select {
		case reload <- struct{}{}:
		default: // one is pending already
		}
	})
}

// notifyState tells the service manager state, logging a failure.
func (a *app) notifyState(logger *slog.Logger, state string) {
	if err := a.sdNotify(state); err != nil {
		logger.Warn("telling systemd "+state, "err", err)
	}
}

// startCPUProfile profiles the process into path until the returned
// function is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
