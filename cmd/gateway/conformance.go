package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tungate/tungate/internal/conformance"
)

func (a *app) newConformanceCmd() *cobra.Command {
	var (
		lenient  bool
		jsonFile string
		defines  []string
	)
	cmd := &cobra.Command{
		Use:   "conformance [flags] PATH...",
		Short: "Run packetdrill scripts against the own TCP engine in virtual time",
		Long: `Conformance runs packetdrill-style .pkt scripts (files, or directories
searched recursively) against the own TCP engine in listen/accept mode,
in virtual time and in memory: nothing is sent on any network.

Each script prints PASS, FAIL (the script line, what was expected, what
the engine did) or SKIP (why the runner cannot run it); the last line is
"N passed, N failed, N skipped". The exit status is 0 only if nothing
failed.

--lenient runs scripts written for other kernels: it stops checking
advertised windows, option order, options the script did not ask about,
MSS and window-scale values, TSvals and platform socket options, but still
checks flags, sequence and ack numbers, payload lengths, SACK blocks and
timing. Active-open (connect) scripts are skipped.`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			defs := map[string]bool{}
			for _, d := range defines {
				defs[d] = true
			}
			results, sum, err := conformance.RunAll(a.stdout, args, conformance.Options{Lenient: lenient, Defines: defs})
			if err != nil {
				return err
			}
			if jsonFile != "" {
				if err := conformance.WriteJSON(jsonFile, results); err != nil {
					return err
				}
			}
			if sum.Failed > 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("conformance: %d script(s) failed", sum.Failed)}
			}
			if sum.Passed+sum.Skipped == 0 {
				return errors.New("conformance: no .pkt scripts found")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&lenient, "lenient", false, "relax checks for scripts written for Linux or FreeBSD")
	cmd.Flags().StringVar(&jsonFile, "json", "", "write per-script results as JSON to `FILE`")
	cmd.Flags().StringArrayVar(&defines, "define", nil, "select #ifdef `NAME` blocks (repeatable)")
	return cmd
}
