package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tungate/tungate/internal/gwproc"
	"github.com/tungate/tungate/internal/netlab"
)

// benchTUN is the name of the gateway's TUN device in the client
// namespace (one gateway at a time per lab).
const benchTUN = "tgbench0"

// dialTimeout bounds every connection attempt of the workloads.
const dialTimeout = 5 * time.Second

// target is one stack made ready in the lab: a gateway process for the
// userspace stacks, nothing but direct routing for the kernel baseline.
type target struct {
	lab    *netlab.Lab
	stack  string
	gw     *gwproc.Proc // nil for the kernel baseline
	dialer *netlab.Dialer
	// heap is the gateway's --memprofile file, removed by Close unless
	// Options.MemProfile named it.
	heap     string
	keepHeap bool
	// intervals are the connect rates of each ConnectInterval of the
	// last connect test, for the progress line.
	intervals []float64
}

// bringUp prepares stack in lab and checks that connections take the
// intended path. The caller closes the target.
func bringUp(ctx context.Context, lab *netlab.Lab, o Options, stack string, round int) (*target, error) {
	t := &target{lab: lab, stack: stack, dialer: &netlab.Dialer{NS: lab.Client()}}
	if stack == StackKernel {
		if err := lab.Unroute(); err != nil {
			return nil, fmt.Errorf("bench: kernel baseline: %w", err)
		}
	} else {
		spec := gatewaySpecFor(o, stack, round)
		t.heap, t.keepHeap = spec.Extra[1], o.MemProfile != ""
		gw, err := gwproc.Start(ctx, lab, spec)
		if err != nil {
			t.removeHeap()
			return nil, fmt.Errorf("bench: %w", err)
		}
		t.gw = gw
	}
	if err := t.checkPath(ctx); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// gatewaySpecFor is how a round of the bench runs the gateway of stack.
func gatewaySpecFor(o Options, stack string, round int) gwproc.Spec {
	heap := filepath.Join(os.TempDir(), fmt.Sprintf("tungate-bench-%d-%s.heap", os.Getpid(), stack))
	if o.MemProfile != "" {
		heap = fmt.Sprintf("%s-%s-round%d.heap", o.MemProfile, stack, round)
	}
	spec := gwproc.Spec{Cmd: o.Gateway, Stack: stack, TUN: benchTUN, MTU: o.MTU,
		// The memory test asks for the heap and stack figures with
		// SIGUSR1 (see memBreakdown); the first two of Extra, always.
		Extra: []string{"--memprofile", heap}}
	if o.CPUProfile != "" {
		spec.Extra = append(spec.Extra, "--cpuprofile", fmt.Sprintf("%s-%s-round%d.prof", o.CPUProfile, stack, round))
	}
	if o.Faults != "" {
		spec.Extra = append(spec.Extra, "--faults", o.Faults)
	}
	if o.Offload != "" {
		spec.Extra = append(spec.Extra, "--offload", o.Offload)
	}
	if o.Queues != "" {
		spec.Extra = append(spec.Extra, "--queues", o.Queues)
	}
	if o.API {
		sock := filepath.Join(os.TempDir(), fmt.Sprintf("tungate-bench-%d-%s.sock", os.Getpid(), stack))
		spec.Extra = append(spec.Extra, "--api-listen", sock)
	}
	return spec
}

// Close stops the gateway, if any.
func (t *target) Close() error {
	if t.gw == nil {
		return nil
	}
	err := t.gw.Stop()
	t.removeHeap()
	return err
}

// removeHeap removes the gateway's heap profile unless it was asked for.
func (t *target) removeHeap() {
	if t.heap != "" && !t.keepHeap {
		_ = os.Remove(t.heap)
	}
}

// alive returns an error if the gateway has exited.
func (t *target) alive() error {
	if t.gw == nil {
		return nil
	}
	if exited, err := t.gw.Exited(); exited {
		return fmt.Errorf("bench: gateway exited during the test: %v%s", err, t.gw.LogTail())
	}
	return nil
}

// dial connects from the client namespace to addr.
func (t *target) dial(ctx context.Context, addr string) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := t.dialer.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Source addresses that tell the paths apart: the kernel picks the TUN's
// address for connections routed into it, the veth's otherwise.
var (
	viaTUNAddr  = netip.MustParsePrefix(netlab.TUNPrefix4).Addr()
	viaVethAddr = netip.MustParseAddr(netlab.ClientVethAddr4)
)

// checkPath makes one connection and exchanges a byte, and fails unless
// the connection went through the gateway (or, for the baseline, around
// it), so no figure can come from the wrong path.
func (t *target) checkPath(ctx context.Context) error {
	srv, err := startServer(t.lab.Server(), echo)
	if err != nil {
		return err
	}
	defer srv.Close()
	c, err := t.dial(ctx, srv.Addr())
	if err != nil {
		return fmt.Errorf("bench: %s: first connection: %w%s", t.stack, err, t.gwLog())
	}
	defer c.Close()
	want := viaTUNAddr
	if t.gw == nil {
		want = viaVethAddr
	}
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != want {
		return fmt.Errorf("bench: %s: connection left from %s, want %s: the routing is not what the test needs", t.stack, got, want)
	}
	_ = c.SetDeadline(time.Now().Add(dialTimeout))
	b := []byte{42}
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("bench: %s: first exchange: %w", t.stack, err)
	}
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("bench: %s: first exchange: %w%s", t.stack, err, t.gwLog())
	}
	return nil
}

func (t *target) gwLog() string {
	if t.gw == nil {
		return ""
	}
	return t.gw.LogTail()
}

// usage is a snapshot of the CPU the gateway and the machine have used.
type usage struct {
	at      time.Time
	gateway time.Duration // zero without a gateway
	machine time.Duration
}

func (t *target) usage() (usage, error) {
	u := usage{at: time.Now()}
	var errG, errM error
	if t.gw != nil {
		u.gateway, errG = processCPU(t.gw.Pid())
	}
	u.machine, errM = machineBusy()
	return u, errors.Join(errG, errM)
}

// echo writes back whatever it reads until EOF or an error. It copies
// through a small buffer rather than io.Copy, which would splice(2) and
// measure a different kernel path than a request/response server's.
func echo(c *net.TCPConn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// startServer listens on a fresh port of the server's address in ns.
func startServer(ns *netlab.NS, handle func(*net.TCPConn)) (*netlab.Server, error) {
	return netlab.Serve(ns, netlab.ServerAddr4+":0", handle)
}
