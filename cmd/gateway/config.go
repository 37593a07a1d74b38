package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check the gateway configuration",
		Args:  noSubcommand,
		RunE:  showHelp,
	}
	cmd.AddCommand(a.newConfigCheckCmd())
	return cmd
}

func (a *app) newConfigCheckCmd() *cobra.Command {
	var (
		file  string
		print bool
	)
	cmd := &cobra.Command{
		Use:   "check [--config FILE] [--print]",
		Short: "Report every problem in the configuration",
		Long: `Check loads the --config file (if given) over the built-in defaults,
applies TUNGATE_* environment variables, and reports every problem, one per
line: unknown keys and variables, values that do not parse, and settings
that are invalid alone or together. It prints "config OK" and exits 0 when
there is none, and exits 2 otherwise.

With --print, the effective configuration is written to stdout as YAML
(passwords redacted) and "config OK" goes to stderr.`,
		Args:                  usageArgs(cobra.NoArgs),
		DisableFlagsInUseLine: true,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.loadConfig(file, nil)
			if err != nil {
				return err
			}
			if !print {
				_, err := fmt.Fprintln(a.stdout, "config OK")
				return err
			}
			if err := cfg.WriteYAML(a.stdout); err != nil {
				return fmt.Errorf("write config: %w", err)
			}
			fmt.Fprintln(a.stderr, "config OK")
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "YAML config `file`")
	cmd.Flags().BoolVar(&print, "print", false, "write the effective configuration as YAML to stdout")
	return cmd
}
