package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/tungate/tungate/internal/gwproc"
	"github.com/tungate/tungate/internal/netlab"
)

// The memory test's echo server runs in a process of its own, `gateway
// bench-echo`, in the server namespace. Each idle connection has three
// descriptors: the client's socket in the bench, the gateway's upstream
// socket and the server's socket. With the server in the bench too, the
// bench would need two per connection, and 10,000 idle connections would
// not fit under this machine's hard limit of 20,000 open files.

// EchoCommand is the hidden subcommand that runs ServeEcho.
const EchoCommand = "bench-echo"

// echoReadyPrefix starts the line ServeEcho writes once it listens.
const echoReadyPrefix = "listening "

// ServeEcho listens on addr, writes "listening ADDR" to out, and echoes
// every connection until stop reaches EOF (the bench closing its end of
// the pipe, or exiting), then closes everything and returns.
func ServeEcho(addr string, stop io.Reader, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("bench-echo: %w", err)
	}
	srv := netlab.ServeListener(ln, echo)
	defer srv.Close()
	if _, err := fmt.Fprintf(out, "%s%s\n", echoReadyPrefix, srv.Addr()); err != nil {
		return fmt.Errorf("bench-echo: %w", err)
	}
	_, err = io.Copy(io.Discard, stop)
	return err
}

// EchoServer is a running `gateway bench-echo`.
type EchoServer struct {
	cmd   *exec.Cmd
	stop  io.WriteCloser
	addr  string
	waitc chan error
}

// StartEcho starts `gw bench-echo` in ns and waits until it listens. The
// end-to-end tests use it too, for the same reason as the bench.
func StartEcho(ctx context.Context, ns *netlab.NS, gw gwproc.Command) (*EchoServer, error) {
	cmd := ns.Command(ctx, gw.Path, EchoCommand, "--listen", netlab.ServerAddr4+":0")
	cmd.Env = gwproc.Env(gw.Env)
	stop, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s %s: %w", gw.Path, EchoCommand, err)
	}
	p := &EchoServer{cmd: cmd, stop: stop, waitc: make(chan error, 1)}
	line, rerr := bufio.NewReader(stdout).ReadString('\n')
	go func() { p.waitc <- cmd.Wait() }()
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), echoReadyPrefix)
	if rerr != nil || !ok {
		p.Close()
		return nil, fmt.Errorf("bench: %s did not start (%q): %v %s", EchoCommand, line, rerr, strings.TrimSpace(stderr.String()))
	}
	p.addr = addr
	return p, nil
}

// Addr is the address clients dial.
func (p *EchoServer) Addr() string { return p.addr }

// Close stops the process (EOF on its stdin) and waits for it.
func (p *EchoServer) Close() error {
	p.stop.Close()
	select {
	case err := <-p.waitc:
		return err
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		return errors.Join(errors.New("bench: echo server did not stop; killed"), <-p.waitc)
	}
}
