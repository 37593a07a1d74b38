package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is the release, set when building:
//
//	go build -ldflags "-X main.version=v1.2.3" ./cmd/gateway
var version = "dev"

func (a *app) newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the Go version and the module version",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			info, _ := debug.ReadBuildInfo()
			_, err := io.WriteString(a.stdout, versionText(version, info))
			return err
		},
	}
}

// versionText formats the version report; info may be nil when the binary
// carries no build information.
func versionText(version string, info *debug.BuildInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway %s\n", version)
	fmt.Fprintf(&b, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if info == nil {
		return b.String()
	}
	if info.Main.Path != "" {
		fmt.Fprintf(&b, "module: %s %s\n", info.Main.Path, info.Main.Version)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (modified)"
		}
		fmt.Fprintf(&b, "revision: %s %s\n", rev, settings["vcs.time"])
	}
	return b.String()
}
