package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/gateway"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the gateway or a command failed at run time
	exitUsage   = 2 // bad command line or invalid configuration
)

// app is what the commands need from the process. Tests build one with
// fakes, so the whole command tree runs in-process without privileges.
type app struct {
	stdout, stderr io.Writer
	// environ is the environment for config loading; nil means os.Environ().
	environ []string
	// serve runs the gateway until its context is done.
	serve func(context.Context, *config.Config, gateway.Options) error
	// notify starts delivering SIGINT and SIGTERM to c; stopNotify undoes it.
	notify, stopNotify func(c chan<- os.Signal)
	// notifyReload starts delivering SIGHUP to c (stopNotify undoes it);
	// nil means no reload by signal.
	notifyReload func(c chan<- os.Signal)
	// exit ends the process at once; used on a second signal.
	exit func(code int)
}

// exitError carries an exit status other than exitFailure. usage asks for
// the command's usage to be printed after the error.
type exitError struct {
	code  int
	usage bool
	err   error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error {
	return &exitError{code: exitUsage, usage: true, err: err}
}

// usageArgs makes an argument validator's errors usage errors.
func usageArgs(validate cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := validate(cmd, args); err != nil {
			return usageError(err)
		}
		return nil
	}
}

// noSubcommand rejects arguments to a command that only groups others,
// suggesting the nearest subcommand.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, applied only in its own lookup
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usageError(errors.New(msg))
}

func showHelp(cmd *cobra.Command, _ []string) error { return cmd.Help() }

func (a *app) newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "gateway",
		Short: "Userspace network gateway: TUN device → TCP/IP stack → upstream",
		Long: `gateway reads IP packets from a TUN device, terminates TCP and UDP in a
userspace stack and relays every flow to an upstream: direct, SOCKS5 or
HTTP CONNECT.

Exit status: 0 on success, 1 on a runtime error, 2 on a usage or
configuration error.`,
		Args:          noSubcommand,
		RunE:          showHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.AddCommand(a.newRunCmd(), a.newConfigCmd(), a.newVersionCmd())
	root.AddCommand(a.newBenchCmd(), a.newBenchEchoCmd())
	root.AddCommand(a.newDemoCmd())
	root.AddCommand(a.newConformanceCmd())
	root.AddCommand(a.newRouteCmd(), a.newCleanupCmd())
	return root
}

// execute runs the command tree on args and turns its error into output
// and an exit status.
func (a *app) execute(args []string) int {
	root := a.newRootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(context.Background())
	if err == nil {
		return exitOK
	}
	return a.report(cmd, err)
}

// report prints err as "gateway: ..." lines, one per configuration problem
// or error line, and returns the exit status it calls for.
func (a *app) report(cmd *cobra.Command, err error) int {
	code, usage := exitFailure, false
	var ee *exitError
	if errors.As(err, &ee) {
		code, usage = ee.code, ee.usage
	}
	var lines []string
	var ce *config.Error
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			lines = append(lines, p.Error())
		}
	} else {
		lines = strings.Split(err.Error(), "\n")
	}
	for _, line := range lines {
		// Errors from the gateway package may already carry the prefix.
		fmt.Fprintln(a.stderr, "gateway: "+strings.TrimPrefix(line, "gateway: "))
	}
	if usage && cmd != nil {
		fmt.Fprint(a.stderr, "\n"+cmd.UsageString())
	}
	return code
}

// loadConfig loads the configuration; every failure is a configuration
// error (exit status 2).
func (a *app) loadConfig(file string, cmd *cobra.Command) (*config.Config, error) {
	opts := config.LoadOptions{File: file, Environ: a.environ}
	if cmd != nil {
		opts.Flags = cmd.Flags()
	}
	cfg, err := config.Load(opts)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	return cfg, nil
}
