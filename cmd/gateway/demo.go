package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/tungate/tungate/internal/bench"
	"github.com/tungate/tungate/internal/demo"
	"github.com/tungate/tungate/internal/gwproc"
)

func (a *app) newDemoCmd() *cobra.Command {
	var stack string
	cmd := &cobra.Command{
		Use:   "demo [--stack KIND]",
		Short: "Watch the gateway work: a throwaway topology, real requests, a TCP ladder",
		Long: `Demo builds a throwaway topology (client namespace → TUN → gateway → veth →
server namespace, addresses in 198.18.0.0/15), starts a small HTTP server
upstream and sends a few real requests through the gateway: a page, a
1 MiB download, one to an address whose upstream refuses (the app sees
"connection refused", never "connected, then reset") and a half-close
exchange. It prints the handshake and teardown of the half-close
connection as a ladder (what ` + "`gateway run --trace`" + ` shows), a table of what
happened, and removes everything again. No config file is needed.

Needs root. Takes a few seconds.`,
		Args:                  usageArgs(cobra.NoArgs),
		RunE:                  func(cmd *cobra.Command, _ []string) error { return a.runDemo(cmd, stack) },
		DisableFlagsInUseLine: true,
	}
	cmd.Flags().StringVar(&stack, "stack", bench.StackCustom, "stack of the gateway: custom (prints the ladder) or gvisor")
	return cmd
}

func (a *app) runDemo(cmd *cobra.Command, stack string) error {
	if stack != bench.StackCustom && stack != bench.StackGVisor {
		return usageError(fmt.Errorf("demo: --stack %q: want custom or gvisor", stack))
	}
	if os.Geteuid() != 0 {
		return errors.New("demo: needs root (network namespaces, a TUN device); try: sudo gateway demo")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("demo: finding the gateway binary: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := a.cancelOnSignal(cmd.Context(), logger)
	defer stop()
	return demo.Run(ctx, demo.Options{
		Gateway: gwproc.Command{Path: exe},
		Stack:   stack,
		Out:     a.stdout,
		Logger:  logger,
	})
}
