// Package demo is `gateway demo`: it builds a throwaway topology with
// internal/netlab (a client namespace routed into the gateway's TUN, a
// server namespace behind a veth pair, every address in 198.18.0.0/15),
// starts the gateway as a separate process (internal/gwproc), sends a few
// real requests through it, prints what happened, and removes everything
// again, also when the context is cancelled or a step fails.
package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/gwproc"
	"github.com/tungate/tungate/internal/netlab"
)

// Options configure Run.
type Options struct {
	Gateway gwproc.Command
	// Stack is the gateway's stack kind; empty means custom, the only one
	// that can print the ladder.
	Stack string
	// Out receives the demo's output; nil discards it.
	Out io.Writer
	// Logger receives debug details; nil discards them.
	Logger *slog.Logger
}

// viaTUNAddr is the source address of connections routed into the TUN.
var viaTUNAddr = netip.MustParsePrefix(netlab.TUNPrefix4).Addr()

// Ports of the demo's servers in the server namespace.
const (
	demoHTTPPort      = 80
	demoHalfClosePort = 7000
	demoTUN           = "tgdemo0"
	demoLabPrefix     = "tgdemo"
	// demoTimeout bounds each request.
	demoTimeout = 5 * time.Second
	// demoBytes is the size of the download request.
	demoBytes = 1 << 20
)

// demoStep is one request of the demo and what came of it.
type demoStep struct {
	request, result string
	took            time.Duration
	err             error // the step did not go as the demo expects
}

// Run builds a throwaway topology, runs the gateway in it, sends a few
// real requests through it (plain HTTP, a download, one to an upstream
// that refuses, and a half-close exchange), prints the ladder of the
// half-close connection and a table of what happened, and removes
// everything again. It returns an error if a step did not go as it
// should.
func Run(ctx context.Context, o Options) (err error) {
	if o.Stack == "" {
		o.Stack = config.StackCustom
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	out := o.Out
	start := time.Now()
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "[%4.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	lab, err := netlab.New(netlab.Options{Name: demoLabPrefix, Logger: o.Logger})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer func() {
		if cerr := lab.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("demo: removing the topology: %w", cerr)
		}
		say("cleaned up: gateway stopped, namespaces %s and %s removed", lab.Client().Name, lab.Server().Name)
	}()
	printTopology(out, lab, o.Stack)

	srv, err := startDemoServers(lab)
	if err != nil {
		return err
	}
	defer srv.Close()
	say("servers up in %s: HTTP on %s:%d, half-close server on %s:%d; nothing listens on %s",
		lab.Server().Name, netlab.ServerAddr4, demoHTTPPort, netlab.ServerAddr4, demoHalfClosePort, netlab.RefuseAddr4)

	trace := gwproc.NewTailBuffer(256 << 10)
	spec := gwproc.Spec{Cmd: o.Gateway, Stack: o.Stack, TUN: demoTUN, MTU: netlab.DefaultMTU, Out: trace,
		Extra: []string{"--connect-timeout", "2s"}}
	if o.Stack == config.StackCustom {
		spec.Extra = append(spec.Extra, "--trace", strconv.Itoa(demoHalfClosePort))
	}
	gw, err := gwproc.Start(ctx, lab, spec)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer gw.Stop()
	say("gateway up: `gateway run --stack %s --tun-name %s --fwmark %d`, pid %d; the client's traffic is routed into %s",
		o.Stack, demoTUN, netlab.Fwmark, gw.Pid(), demoTUN)

	steps := runDemoSteps(ctx, lab, say)
	if o.Stack == config.StackCustom {
		waitForLadder(ctx, trace)
	}
	stopErr := gw.Stop()
	if _, lerr := lab.Client().Netlink().LinkByName(demoTUN); lerr == nil {
		stopErr = errors.Join(stopErr, fmt.Errorf("demo: TUN %s still exists after the gateway stopped", demoTUN))
	}
	say("gateway stopped (SIGTERM): every connection closed, TUN removed")

	printLadder(out, o.Stack, trace.String())
	printSteps(out, steps, o.Stack == config.StackCustom)
	var errs []error
	for _, s := range steps {
		if s.err != nil {
			errs = append(errs, fmt.Errorf("demo: %s: %w", s.request, s.err))
		}
	}
	if o.Stack == config.StackCustom && !strings.Contains(trace.String(), "SYN") {
		errs = append(errs, errors.New("demo: the gateway printed no ladder"))
	}
	return errors.Join(append(errs, stopErr, ctx.Err())...)
}

func printTopology(w io.Writer, lab *netlab.Lab, stack string) {
	fmt.Fprintf(w, "tungate demo: real kernel TCP clients, the gateway (stack %s), real servers.\n\n", stack)
	fmt.Fprintf(w, "  client namespace %s\n", lab.Client().Name)
	fmt.Fprintf(w, "    app (kernel TCP) ──► TUN %s %s ──► gateway ──► %s %s\n",
		demoTUN, netlab.TUNPrefix4, lab.ClientVeth(), netlab.ClientVethAddr4)
	fmt.Fprintf(w, "    (the gateway's upstream sockets carry fwmark %d, so they bypass the TUN)\n", netlab.Fwmark)
	fmt.Fprintf(w, "                                      ║ veth\n")
	fmt.Fprintf(w, "  server namespace %s\n", lab.Server().Name)
	fmt.Fprintf(w, "    %s  HTTP on :%d, half-close server on :%d\n", netlab.ServerAddr4, demoHTTPPort, demoHalfClosePort)
	fmt.Fprintf(w, "    %s  refuses every connection (RST)\n\n", netlab.RefuseAddr4)
}

// demoServers are the HTTP and half-close servers of the demo.
type demoServers struct {
	http      *http.Server
	httpDone  chan struct{}
	halfClose *netlab.Server
}

func startDemoServers(lab *netlab.Lab) (*demoServers, error) {
	ln, err := lab.Server().Listen("tcp", net.JoinHostPort(netlab.ServerAddr4, strconv.Itoa(demoHTTPPort)))
	if err != nil {
		return nil, fmt.Errorf("demo: http server: %w", err)
	}
	hc, err := netlab.Serve(lab.Server(), net.JoinHostPort(netlab.ServerAddr4, strconv.Itoa(demoHalfClosePort)), serveHalfClose)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("demo: half-close server: %w", err)
	}
	s := &demoServers{
		http:      &http.Server{Handler: demoHandler(), ReadHeaderTimeout: demoTimeout},
		httpDone:  make(chan struct{}),
		halfClose: hc,
	}
	go func() {
		defer close(s.httpDone)
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

// Close stops both servers and waits for them.
func (s *demoServers) Close() {
	_ = s.http.Close()
	<-s.httpDone
	s.halfClose.Close()
}

func demoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s; you came from %s\n", netlab.ServerAddr4, r.RemoteAddr)
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > 16<<20 {
			http.Error(w, "n: a byte count up to 16 MiB", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(demoPayload(n))
	})
	return mux
}

// demoPayload is n bytes both sides can compute.
func demoPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// serveHalfClose reads to the client's FIN, then answers and closes.
func serveHalfClose(c *net.TCPConn) {
	_ = c.SetDeadline(time.Now().Add(demoTimeout))
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	fmt.Fprintf(c, "read %d bytes and your FIN; answering, then closing", len(b))
}

// runDemoSteps sends the demo's requests from the client namespace.
func runDemoSteps(ctx context.Context, lab *netlab.Lab, say func(string, ...any)) []demoStep {
	client := demoHTTPClient(lab)
	defer client.CloseIdleConnections()
	httpBase := "http://" + netlab.ServerAddr4
	run := func(request string, f func(ctx context.Context) (string, error)) demoStep {
		ctx, cancel := context.WithTimeout(ctx, demoTimeout)
		defer cancel()
		t0 := time.Now()
		res, err := f(ctx)
		s := demoStep{request: request, result: res, took: time.Since(t0), err: err}
		if err != nil && s.result == "" {
			s.result = "FAILED: " + err.Error()
		}
		say("%-40s %s (%s)", request, s.result, formatTook(s.took))
		return s
	}
	return []demoStep{
		run("GET "+httpBase+"/", func(ctx context.Context) (string, error) {
			return demoGet(ctx, client, httpBase+"/", nil)
		}),
		run(fmt.Sprintf("GET %s/bytes?n=%d", httpBase, demoBytes), func(ctx context.Context) (string, error) {
			return demoGet(ctx, client, fmt.Sprintf("%s/bytes?n=%d", httpBase, demoBytes), demoPayload(demoBytes))
		}),
		run("GET http://"+netlab.RefuseAddr4+"/", func(ctx context.Context) (string, error) {
			return demoRefused(ctx, client, "http://"+netlab.RefuseAddr4+"/")
		}),
		run(fmt.Sprintf("half-close %s:%d", netlab.ServerAddr4, demoHalfClosePort), func(ctx context.Context) (string, error) {
			return demoHalfClose(ctx, lab)
		}),
	}
}

// demoHTTPClient makes one connection per request from the client
// namespace, and checks that each leaves through the TUN.
func demoHTTPClient(lab *netlab.Lab) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialViaTUN(ctx, lab, addr)
	}
	return &http.Client{
		Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true},
		Timeout:   demoTimeout,
	}
}

// dialViaTUN connects from the client namespace and fails unless the
// connection went into the gateway's TUN.
func dialViaTUN(ctx context.Context, lab *netlab.Lab, addr string) (*net.TCPConn, error) {
	c, err := lab.Client().DialContext(ctx, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != viaTUNAddr {
		c.Close()
		return nil, fmt.Errorf("connection left from %s, not through the TUN (%s)", got, viaTUNAddr)
	}
	return c.(*net.TCPConn), nil
}

func demoGet(ctx context.Context, client *http.Client, url string, want []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Status, fmt.Errorf("status %s", resp.Status)
	}
	if want == nil {
		return fmt.Sprintf("%s %q", resp.Status, strings.TrimSpace(string(body))), nil
	}
	if !bytes.Equal(body, want) {
		return fmt.Sprintf("%s, %d bytes, content differs", resp.Status, len(body)), errors.New("the body is not what the server sent")
	}
	sum := sha256.Sum256(body)
	return fmt.Sprintf("%s, %d KiB, SHA-256 %x… as sent", resp.Status, len(body)>>10, sum[:4]), nil
}

func demoRefused(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
		return resp.Status, errors.New("the request succeeded; the upstream should have refused")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return "", fmt.Errorf("want connection refused, got %w", err)
	}
	return "connection refused (a RST answered the SYN)", nil
}

const demoHalfCloseRequest = "this is all I have to say"

func demoHalfClose(ctx context.Context, lab *netlab.Lab) (string, error) {
	c, err := dialViaTUN(ctx, lab, net.JoinHostPort(netlab.ServerAddr4, strconv.Itoa(demoHalfClosePort)))
	if err != nil {
		return "", err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	if _, err := io.WriteString(c, demoHalfCloseRequest); err != nil {
		return "", err
	}
	if err := c.CloseWrite(); err != nil {
		return "", fmt.Errorf("half-close: %w", err)
	}
	answer, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("reading the answer after the half-close: %w", err)
	}
	want := fmt.Sprintf("read %d bytes and your FIN", len(demoHalfCloseRequest))
	if !strings.HasPrefix(string(answer), want) {
		return "", fmt.Errorf("answer %q, want it to start with %q", answer, want)
	}
	return fmt.Sprintf("sent %d bytes + FIN, got %d bytes + FIN back", len(demoHalfCloseRequest), len(answer)), nil
}

func formatTook(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

// waitForLadder gives the traced connection's teardown time to finish
// (the last ACK of the close), at most a second.
func waitForLadder(ctx context.Context, trace *gwproc.TailBuffer) {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if strings.Contains(trace.String(), "→ CLOSED") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func printLadder(w io.Writer, stack, ladder string) {
	fmt.Fprintln(w)
	if stack != config.StackCustom {
		fmt.Fprintf(w, "(no ladder: --trace needs the custom stack; this run used %s)\n", stack)
		return
	}
	fmt.Fprintf(w, "The half-close connection, as `gateway run --trace %d` prints it\n", demoHalfClosePort)
	fmt.Fprintln(w, "(app = the client's kernel TCP, gw = the gateway's engine, up = its upstream socket):")
	fmt.Fprintln(w)
	if strings.TrimSpace(ladder) == "" {
		fmt.Fprintln(w, "  (nothing was traced)")
		return
	}
	for line := range strings.Lines(ladder) {
		fmt.Fprint(w, "  "+line)
	}
}

func printSteps(w io.Writer, steps []demoStep, ladder bool) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "What happened:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\trequest\tresult\ttime")
	for i, s := range steps {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", i+1, s.request, s.result, formatTook(s.took))
	}
	tw.Flush()
	fmt.Fprintf(w, `
  1: the server sees the gateway's upstream socket (%s), not the app (%s).
  3: the gateway answers the app's SYN only after its own connection upstream
     succeeds; the upstream refused, so the app got a RST instead of a SYN-ACK:
     "connection refused", never "connected, then reset".
  4: the app's FIN went upstream while the other direction stayed open; the
     server's answer and its FIN came back after it%s.

`, netlab.ClientVethAddr4, viaTUNAddr, map[bool]string{true: " (see the ladder above)"}[ladder])
}
