package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/gateway"
	"github.com/tungate/tungate/tun/autoroute"
)

func (a *app) newRouteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route",
		Short: "Show what tun.auto_route installs",
		Args:  noSubcommand,
		RunE:  showHelp,
	}
	cmd.AddCommand(a.newRoutePlanCmd())
	return cmd
}

func (a *app) newRoutePlanCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "plan [--config FILE] [flags]",
		Short: "Print the rules and routes auto_route would install, touching nothing",
		Long: `Plan prints, as ip commands with the reason for each, the exact rules and
routes that gateway run with tun.auto_route installs for this configuration
(the --config file, TUNGATE_* variables and the flags below, as for run).
It changes nothing on the host, and needs no privileges. The plan is that of
--auto-route whether or not the configuration turns tun.auto_route on.`,
		Args:                  usageArgs(cobra.NoArgs),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The plan is the same whether or not the file turns auto_route
			// on; validate it as gateway run --auto-route would.
			if err := cmd.Flags().Set("auto-route", "true"); err != nil {
				return err
			}
			cfg, err := a.loadConfig(file, cmd)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "# gateway run --auto-route installs, for TUN %s:\n", cfg.TUN.Name)
			ups := gateway.ProxyAddrs(cmd.Context(), cfg, func(err error) {
				fmt.Fprintf(a.stdout, "# %v: at start, the addresses it resolves to are excluded too\n", err)
			})
			p, err := gateway.AutoRoutePlan(cfg, ups)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "# the gateway's own sockets carry SO_MARK %#x (%s)\n", cfg.SocketMark(), cfg.MarkKey())
			_, err = fmt.Fprint(a.stdout, p)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "YAML config `file`")
	config.RegisterFlags(cmd.Flags())
	return cmd
}

func (a *app) newCleanupCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "cleanup [--config FILE]",
		Short: "Remove the rules and routes a killed gateway left behind",
		Long: `Cleanup removes the ip rules and routes that gateway run --auto-route
installed and could not remove because it was killed (SIGKILL, a crash):
those in tun.route_table and in the rule priorities tun.rule_priority … +9
that carry tungate's routing-protocol marker (proto 116). Nothing else is
touched. A gateway still running with that table is left alone (exit 1).
gateway run does the same by itself before it installs its own.`,
		Args:                  usageArgs(cobra.NoArgs),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig(file, cmd)
			if err != nil {
				return err
			}
			n, err := autoroute.CleanupStale(cfg.TUN.RouteTable, cfg.TUN.RulePriority)
			if err != nil {
				return fmt.Errorf("cleanup: %w", err)
			}
			_, err = fmt.Fprintf(a.stdout, "removed %d stale rules and routes (table %d, priorities %d-%d)\n",
				n, cfg.TUN.RouteTable, cfg.TUN.RulePriority, cfg.TUN.RulePriority+autoroute.BlockSize-1)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "YAML config `file`")
	return cmd
}
