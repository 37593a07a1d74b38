// Command gateway runs tungate: it reads IP packets from a TUN device,
// terminates TCP and UDP in a userspace stack and relays each flow upstream.
//
// Exit status: 0 on success, 1 on a runtime error, 2 on a usage or
// configuration error.
package main

import (
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tungate/tungate/internal/gateway"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return newApp(stdout, stderr).execute(args)
}

// newApp wires the commands to the real process: its environment, the
// gateway, signals and os.Exit.
func newApp(stdout, stderr io.Writer) *app {
	return &app{
		stdout: stdout,
		stderr: stderr,
		serve:  gateway.Run,
		notify: func(c chan<- os.Signal) {
			signal.Notify(c, os.Interrupt, syscall.SIGTERM)
		},
		notifyReload: func(c chan<- os.Signal) {
			signal.Notify(c, syscall.SIGHUP)
		},
		stopNotify: func(c chan<- os.Signal) { signal.Stop(c) },
		exit:       os.Exit,
	}
}
