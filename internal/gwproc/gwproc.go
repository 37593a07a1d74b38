// Package gwproc runs a gateway binary as a separate process inside a
// netlab lab's client namespace, routes the client's traffic into its TUN
// and stops it in order: what `gateway bench` and `gateway demo` test.
package gwproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tungate/tungate/internal/netlab"
)

// Timeouts of the gateway process's life cycle.
const (
	// upTimeout bounds the wait for the gateway's TUN to appear.
	upTimeout = 20 * time.Second
	// stopTimeout is how long a gateway may take to shut down after
	// SIGTERM before it is killed.
	stopTimeout = 10 * time.Second
)

// Proc is one gateway process running in a lab's client namespace.
type Proc struct {
	cmd  *exec.Cmd
	logs *TailBuffer
	done chan struct{} // closed once the process has exited and err is set
	err  error         // what Wait returned
	stop sync.Once     // runs the shutdown once
	serr error         // Stop's result
}

// Command says how to start the gateway under test: Path is run as
// `Path run --stack KIND ...` inside the client namespace.
type Command struct {
	// Path is the gateway binary, usually os.Executable().
	Path string
	// Env is the process environment; nil means the current one. TUNGATE_*
	// variables are removed either way: the command line alone decides
	// what runs, and a user's settings cannot skew a comparison.
	Env []string
}

// Spec is what to run.
type Spec struct {
	Cmd   Command
	Stack string
	TUN   string
	MTU   int
	Extra []string  // further `gateway run` flags
	Out   io.Writer // standard output (the --trace ladder); nil: the log tail
}

// Start starts the gateway in lab's client namespace, waits until
// its TUN is up and routes the client's traffic into it. On error nothing
// is left running. Cancelling ctx asks the process to shut down (SIGTERM)
// and kills it if it does not within stopTimeout.
func Start(ctx context.Context, lab *netlab.Lab, spec Spec) (*Proc, error) {
	args := append([]string{"run",
		"--stack", spec.Stack,
		"--tun-name", spec.TUN,
		"--mtu", fmt.Sprint(spec.MTU),
		"--fwmark", fmt.Sprint(netlab.Fwmark),
		"--log-level", "info",
	}, spec.Extra...)
	g := &Proc{logs: NewTailBuffer(32 << 10), done: make(chan struct{})}
	g.cmd = lab.Client().Command(ctx, spec.Cmd.Path, args...)
	g.cmd.Env = Env(spec.Cmd.Env)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if spec.Out != nil {
		g.cmd.Stdout = spec.Out
	}
	// Own process group: a Ctrl-C on the terminal reaches the bench only,
	// which then stops the gateway in order. Pdeathsig kills the gateway
	// if the bench dies without cleaning up.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	g.cmd.Cancel = func() error { return g.cmd.Process.Signal(syscall.SIGTERM) }
	g.cmd.WaitDelay = stopTimeout
	if err := g.startLocked(); err != nil {
		return nil, fmt.Errorf("start gateway %s: %w", spec.Cmd.Path, err)
	}
	if err := g.route(ctx, lab, spec.TUN); err != nil {
		_ = g.Stop()
		return nil, err
	}
	return g, nil
}

// startLocked starts the process from a goroutine locked to its OS
// thread until the process has exited. Pdeathsig fires when the thread
// that forked the child ends, not the process: forked from an ordinary
// thread, the gateway would be killed whenever the runtime retires that
// thread, as netlab does with the threads it moves into namespaces.
func (g *Proc) startLocked() error {
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine, after the
		// process.
		if err := g.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		g.err = g.cmd.Wait()
		close(g.done)
	}()
	return <-started
}

// route waits for the TUN and routes the client namespace into it.
func (g *Proc) route(ctx context.Context, lab *netlab.Lab, tun string) error {
	ctx, cancel := context.WithTimeout(ctx, upTimeout)
	defer cancel()
	routed := make(chan error, 1)
	go func() { routed <- lab.RouteViaTUN(ctx, tun) }()
	select {
	case err := <-routed:
		if err != nil {
			return fmt.Errorf("gateway did not come up: %w%s", err, g.LogTail())
		}
		return nil
	case <-g.done:
		cancel()
		<-routed
		return fmt.Errorf("gateway exited at start: %v%s", g.err, g.LogTail())
	}
}

// Env is env (or the current environment) without TUNGATE_*
// variables.
func Env(env []string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TUNGATE_") {
			out = append(out, kv)
		}
	}
	return out
}

// Pid is the gateway's process id: `ip netns exec` replaces itself with
// the gateway, so it is the started process's.
func (g *Proc) Pid() int { return g.cmd.Process.Pid }

// Exited reports whether the process has ended, and how.
func (g *Proc) Exited() (bool, error) {
	select {
	case <-g.done:
		return true, g.err
	default:
		return false, nil
	}
}

// Stop asks the gateway to shut down (SIGTERM) and waits; after
// stopTimeout it kills it. It returns an error if the gateway had died of
// something else, or did not exit cleanly. Later calls return the same
// result.
func (g *Proc) Stop() error {
	g.stop.Do(func() { g.serr = g.shutdown() })
	return g.serr
}

func (g *Proc) shutdown() error {
	select {
	case <-g.done:
		return g.exitError()
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(stopTimeout):
		_ = g.cmd.Process.Kill()
		<-g.done
		return fmt.Errorf("gateway did not stop within %v of SIGTERM; killed%s", stopTimeout, g.LogTail())
	}
	return g.exitError()
}

// exitError is nil if the gateway exited as asked: status 0, killed by
// our SIGTERM before its handler was installed, or stopped through the
// context (which Wait reports as the context's error).
func (g *Proc) exitError() error {
	err := g.err
	if err == nil || isTerminatedBy(err, syscall.SIGTERM) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return fmt.Errorf("gateway exited with %v%s", err, g.LogTail())
}

// isTerminatedBy reports whether err says the process died of sig, as it
// does when the context's cancel signal arrived before its handler.
func isTerminatedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// Output is the end of the gateway's output (its last 32 KiB), for
// callers that read what it logged.
func (g *Proc) Output() string { return g.logs.String() }

// LogTail is the end of the gateway's output, for error messages.
func (g *Proc) LogTail() string {
	s := strings.TrimSpace(g.logs.String())
	if s == "" {
		return ""
	}
	return "\ngateway output:\n" + s
}

// TailBuffer keeps the last max bytes written to it. It is safe for
// concurrent use.
type TailBuffer struct {
	max int
	mu  sync.Mutex // guards b
	b   []byte
}

// NewTailBuffer returns a TailBuffer that keeps max bytes.
func NewTailBuffer(max int) *TailBuffer { return &TailBuffer{max: max} }

func (t *TailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *TailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
