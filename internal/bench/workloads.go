package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tungate/tungate/internal/netlab"
)

// figures are one round's values of a test, by metric key.
type figures map[string]float64

// runTest runs one test on the target. It may return figures together
// with an error (a connect test with failed connections, say); the
// figures are kept and the error is reported as a failure.
func (t *target) runTest(ctx context.Context, test string, o Options) (figures, error) {
	switch test {
	case TestMemory:
		return t.memory(ctx, o)
	case TestLatency:
		return t.latency(ctx, o)
	case TestConnect:
		return t.connect(ctx, o)
	case TestConnectReuse:
		return t.connectReuse(ctx, o)
	case TestUpload1:
		return t.bulk(ctx, o, true, 1)
	case TestDownload1:
		return t.bulk(ctx, o, false, 1)
	case TestUploadN:
		return t.bulk(ctx, o, true, o.Streams)
	case TestDownloadN:
		return t.bulk(ctx, o, false, o.Streams)
	case TestUDP:
		return t.udp(ctx, o)
	}
	return nil, fmt.Errorf("bench: unknown test %q", test)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// firstErr keeps the first error reported to it.
type firstErr struct {
	mu  sync.Mutex // guards err
	err error
}

func (f *firstErr) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// bulkChunk is the size of each write of the bulk senders.
const bulkChunk = 128 << 10

// bulk moves data as fast as it goes over streams connections, upload
// (client → server) or download, and measures what the receivers count
// after the warm-up, and the CPU used meanwhile.
func (t *target) bulk(ctx context.Context, o Options, upload bool, streams int) (figures, error) {
	var received atomic.Int64
	var stopped atomic.Bool
	var fail firstErr
	payload := make([]byte, bulkChunk)
	rng := rand.NewChaCha8([32]byte{7})
	_, _ = rng.Read(payload) // incompressible, should any layer ever try

	send := func(c *net.TCPConn, who string) {
		for !stopped.Load() {
			if _, err := c.Write(payload); err != nil {
				if !stopped.Load() {
					fail.set(fmt.Errorf("%s write: %w", who, err))
				}
				return
			}
		}
	}
	recv := func(c *net.TCPConn, who string) {
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				if !stopped.Load() {
					fail.set(fmt.Errorf("%s read (stream ended early): %w", who, err))
				}
				return
			}
		}
	}
	srv, err := startServer(t.lab.Server(), func(c *net.TCPConn) {
		if upload {
			recv(c, "server")
		} else {
			send(c, "server")
		}
	})
	if err != nil {
		return nil, err
	}
	defer srv.Close()

	conns, err := t.dialN(ctx, srv.Addr(), streams)
	if err != nil {
		closeAll(conns)
		return nil, err
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			if upload {
				send(c, "client")
			} else {
				recv(c, "client")
			}
		})
	}
	// Mark the end first, so that the errors closing causes are not
	// failures; closing both sides then ends every sender and receiver.
	defer func() {
		stopped.Store(true)
		closeAll(conns)
		srv.Close()
		wg.Wait()
	}()

	if err := sleepCtx(ctx, o.warmup()); err != nil {
		return nil, err
	}
	u0, err0 := t.usage()
	b0 := received.Load()
	if err := sleepCtx(ctx, o.Duration); err != nil {
		return nil, err
	}
	u1, err1 := t.usage()
	b1 := received.Load()
	if err := errors.Join(err0, err1); err != nil {
		return nil, err
	}
	if err := fail.get(); err != nil {
		return nil, err
	}
	return bulkFigures(b1-b0, u0, u1, t.gw != nil)
}

func bulkFigures(n int64, u0, u1 usage, gateway bool) (figures, error) {
	if n <= 0 {
		return nil, errors.New("no data moved in the measured time")
	}
	secs := u1.at.Sub(u0.at).Seconds()
	gb := float64(n) / 1e9
	f := figures{
		mThroughput: float64(n) / secs / 1e6,
		mMachineCPU: (u1.machine - u0.machine).Seconds() / gb,
	}
	if gateway {
		f[mGatewayCPU] = (u1.gateway - u0.gateway).Seconds() / gb
	}
	return f, nil
}

// dialN opens n connections to addr, a few at a time. On error it returns
// the connections made so far with the error; the caller closes them.
func (t *target) dialN(ctx context.Context, addr string, n int) ([]*net.TCPConn, error) {
	conns := make([]*net.TCPConn, n)
	var fail firstErr
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, 16) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n && fail.get() == nil; i = int(next.Add(1)) - 1 {
				c, err := t.dial(ctx, addr)
				if err != nil {
					fail.set(fmt.Errorf("connection %d of %d: %w", i+1, n, err))
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	conns = slices.DeleteFunc(conns, func(c *net.TCPConn) bool { return c == nil })
	return conns, fail.get()
}

func closeAll(conns []*net.TCPConn) {
	for _, c := range conns {
		c.Close()
	}
}

// latency bounces a LatencyPayload-byte message over one kept connection
// and takes percentiles of the round trips measured after the warm-up.
func (t *target) latency(ctx context.Context, o Options) (figures, error) {
	srv, err := startServer(t.lab.Server(), echo)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	c, err := t.dial(ctx, srv.Addr())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, o.LatencyPayload)
	samples := make([]time.Duration, 0, 1<<16)
	start := time.Now()
	measureFrom, end := start.Add(o.warmup()), start.Add(o.warmup()+o.Duration)
	_ = c.SetDeadline(end.Add(dialTimeout))
	for i := 0; ; i++ {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		if _, err := c.Write(buf); err != nil {
			return nil, fmt.Errorf("ping %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, fmt.Errorf("pong %d: %w", i, err)
		}
		if t0.After(measureFrom) {
			samples = append(samples, time.Since(t0))
		}
	}
	if len(samples) == 0 {
		return nil, errors.New("no round trip completed in the measured time")
	}
	slices.Sort(samples)
	us := func(p float64) float64 { return float64(Percentile(samples, p)) / float64(time.Microsecond) }
	return figures{mP50: us(50), mP99: us(99), mP999: us(99.9)}, nil
}

// The connect test's request and reply.
var (
	connectRequest = []byte("GET /bench HTTP/1.0\r\n\r\n")
	connectReply   = []byte("HTTP/1.0 204 No Content\r\n\r\n")
)

const mib = 1 << 20

// stallAfter is how long an unanswered connect has waited when it counts
// as stalled: the client's kernel retransmits its SYN after one second.
const stallAfter = time.Second

// connectLoop is the client side of the connect tests: ConnectWorkers
// clients, each calling one in a loop until Stop. A call that fails after
// Stop is not counted: it was cut short.
type connectLoop struct {
	done, failed, stalled atomic.Int64
	fail                  firstErr
	ctx                   context.Context
	stop                  context.CancelFunc
	wg                    sync.WaitGroup
}

// startConnectLoop starts the clients. one returns how long its connect
// took, so that stalls are counted whether the connect finally succeeded,
// timed out or was cut short by Stop.
func startConnectLoop(ctx context.Context, workers int, one func(context.Context) (time.Duration, error)) *connectLoop {
	l := &connectLoop{}
	l.ctx, l.stop = context.WithCancel(ctx)
	for range workers {
		l.wg.Go(func() {
			for l.ctx.Err() == nil {
				took, err := one(l.ctx)
				if took >= stallAfter {
					l.stalled.Add(1)
				}
				switch {
				case l.ctx.Err() != nil:
					return
				case err != nil:
					l.failed.Add(1)
					l.fail.set(err)
				default:
					l.done.Add(1)
				}
			}
		})
	}
	return l
}

// Stop ends the clients and waits for them.
func (l *connectLoop) Stop() {
	l.stop()
	l.wg.Wait()
}

// connectSample is the state of a connect test at one instant.
type connectSample struct {
	done, stalled int64
	use           usage
}

func (t *target) sample(l *connectLoop) (connectSample, error) {
	s := connectSample{done: l.done.Load(), stalled: l.stalled.Load()}
	var err error
	s.use, err = t.usage()
	return s, err
}

// measureConnects runs warm, measures for d, stops the clients and
// returns the figures: the rate and the CPU per connection of the measured
// time, the rate of each ConnectInterval of it (kept in t.intervals), the
// connects that stalled in it (those cut short at the end included: a
// stack that answers no SYN completes nothing) and the connections that
// failed in the whole run.
func (t *target) measureConnects(ctx context.Context, l *connectLoop, warm func() error, d, interval time.Duration) (figures, error) {
	err := warm()
	a, errA := t.sample(l)
	b, errB := a, errA
	t.intervals = t.intervals[:0]
	for left := d; err == nil && errB == nil && left > 0; {
		step := min(interval, left)
		if err = sleepCtx(ctx, step); err != nil {
			break
		}
		left -= step
		prev := b
		b, errB = t.sample(l)
		if dt := b.use.at.Sub(prev.use.at).Seconds(); errB == nil && dt > 0 {
			t.intervals = append(t.intervals, float64(b.done-prev.done)/dt)
		}
	}
	l.Stop()
	if err = errors.Join(err, errA, errB); err != nil {
		return nil, err
	}
	n := float64(b.done - a.done)
	f := figures{
		mRate:    n / b.use.at.Sub(a.use.at).Seconds(),
		mStalled: float64(l.stalled.Load() - a.stalled),
		mFailed:  float64(l.failed.Load()),
	}
	if len(t.intervals) > 0 {
		first, slowest := t.intervals[0], slices.Min(t.intervals)
		f[mRateFirst], f[mRateMin] = first, slowest
		f[mRateHold] = 0 // the first interval completed nothing: nothing held
		if first > 0 {
			f[mRateHold] = slowest / first
		}
	}
	if n > 0 {
		// Where the stacks differ: the kernel's share (two TCP connections
		// and the TUN per relayed connection) is the same for both.
		f[mMachineCPUConn] = (b.use.machine - a.use.machine).Seconds() / n * 1e6
		if t.gw != nil {
			f[mGatewayCPUConn] = (b.use.gateway - a.use.gateway).Seconds() / n * 1e6
		}
	}
	return f, nil
}

// connect runs ConnectWorkers clients, each in a loop: connect, send a
// request, read the reply, close. It counts the connections completed in
// the measured time, the connects that stalled, and every failure.
func (t *target) connect(ctx context.Context, o Options) (figures, error) {
	srv, err := startServer(t.lab.Server(), serveOneRequest)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	l := startConnectLoop(ctx, o.ConnectWorkers, func(ctx context.Context) (time.Duration, error) {
		return t.oneRequest(ctx, srv.Addr(), false)
	})
	defer l.Stop()
	f, err := t.measureConnects(ctx, l, func() error { return sleepCtx(ctx, o.warmup()) }, o.ConnectDuration, o.ConnectInterval)
	if err != nil {
		return nil, err
	}
	if n := l.failed.Load(); n > 0 {
		return f, fmt.Errorf("%d of %d connections failed; first: %w", n, n+l.done.Load(), l.fail.get())
	}
	return f, nil
}

// Linux's default ephemeral port range ends here; the connect-reuse test
// gives its clients the ReusePorts ports below it.
const reusePortsEnd = 60999

// maxReuseWarmup bounds the connect-reuse test's warm-up, in case a stack
// stalls before the clients have gone round their port range once.
const maxReuseWarmup = 20 * time.Second

// connectReuse is connect with the roles at the end swapped: the server
// closes first, so the gateway's side toward the client is the one that
// closes first and holds TIME-WAIT. The clients take their ports from a
// range of ReusePorts ports, and the warm-up lasts until they have used
// each once: from then on every SYN reuses the 4-tuple of a connection
// the gateway holds in TIME-WAIT (RFC 9293 §3.6.1, RFC 6191), as with any
// busy client of a server that closes first (HTTP/1.0, many RPC
// protocols). A stack that cannot reopen from TIME-WAIT drops those
// SYNs; the clients' kernels retransmit them, and the figures count the
// stalls. A stall is a measurement, not a failure: only wrong replies,
// resets and refusals fail the test.
func (t *target) connectReuse(ctx context.Context, o Options) (figures, error) {
	restore, err := t.clientPortRange(reusePortsEnd-o.ReusePorts+1, reusePortsEnd)
	if err != nil {
		return nil, err
	}
	defer restore()
	srv, err := startServer(t.lab.Server(), serveOneRequestAndClose)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	l := startConnectLoop(ctx, o.ConnectWorkers, func(ctx context.Context) (time.Duration, error) {
		took, err := t.oneRequest(ctx, srv.Addr(), true)
		if errors.Is(err, context.DeadlineExceeded) {
			err = nil // a connect that stalled until the dial timeout: counted as a stall
		}
		return took, err
	})
	defer l.Stop()
	f, err := t.measureConnects(ctx, l, func() error { return t.cyclePorts(ctx, l, int64(o.ReusePorts)) }, o.ConnectDuration, o.ConnectInterval)
	if err != nil {
		return nil, err
	}
	if t.gw != nil {
		rss, err := processRSS(t.gw.Pid())
		if err != nil {
			return nil, err
		}
		f[mRSSEnd] = float64(rss) / mib
	}
	if n := l.failed.Load(); n > 0 {
		return f, fmt.Errorf("%d connections failed; first: %w", n, l.fail.get())
	}
	return f, nil
}

// cyclePorts is connect-reuse's warm-up: it waits until the clients have
// completed ports connections, so that every port of their range has been
// used once. It ends early when no connection completes for stallAfter
// (the stack already stalls on reused ports) or after maxReuseWarmup.
func (t *target) cyclePorts(ctx context.Context, l *connectLoop, ports int64) error {
	now := time.Now()
	deadline, last, lastDone := now.Add(maxReuseWarmup), now, l.done.Load()
	for lastDone < ports && now.Before(deadline) && now.Sub(last) < stallAfter {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
		now = time.Now()
		if d := l.done.Load(); d != lastDone {
			last, lastDone = now, d
		}
	}
	return nil
}

// clientPortRange sets the client namespace's ephemeral port range and
// returns a function that puts the previous one back.
func (t *target) clientPortRange(lo, hi int) (restore func(), err error) {
	const key = "net/ipv4/ip_local_port_range"
	ns := t.lab.Client()
	old, err := ns.Sysctl(key)
	if err != nil {
		return nil, err
	}
	if err := ns.SetSysctl(key, fmt.Sprintf("%d %d", lo, hi)); err != nil {
		return nil, err
	}
	return func() { _ = ns.SetSysctl(key, old) }, nil
}

// oneRequest is one client iteration of the connect tests: connect, send
// the request, read the reply, then either close (the client closes
// first) or wait for the server's FIN and close (serverCloses). It
// returns how long the connect took.
func (t *target) oneRequest(ctx context.Context, addr string, serverCloses bool) (time.Duration, error) {
	start := time.Now()
	c, err := t.dial(ctx, addr)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := c.Write(connectRequest); err != nil {
		return took, fmt.Errorf("request: %w", err)
	}
	reply := make([]byte, len(connectReply)+1)
	if _, err := io.ReadFull(c, reply[:len(connectReply)]); err != nil {
		return took, fmt.Errorf("reply: %w", err)
	}
	if !bytes.Equal(reply[:len(connectReply)], connectReply) {
		return took, fmt.Errorf("reply: got %q", reply[:len(connectReply)])
	}
	if serverCloses {
		if n, err := c.Read(reply); n != 0 || err != io.EOF {
			return took, fmt.Errorf("after the reply: want the server's FIN, got %d bytes, %v", n, err)
		}
	}
	return took, nil
}

// serveOneRequest reads the request, answers, and waits for the client to
// close first.
func serveOneRequest(c *net.TCPConn) {
	if answerRequest(c) == nil {
		_, _ = io.Copy(io.Discard, c)
	}
}

// serveOneRequestAndClose reads the request, answers and closes at once
// (the server's caller closes c): the server closes first.
func serveOneRequestAndClose(c *net.TCPConn) { _ = answerRequest(c) }

// answerRequest reads the connect tests' request and writes the reply.
func answerRequest(c *net.TCPConn) error {
	_ = c.SetDeadline(time.Now().Add(2 * dialTimeout))
	req := make([]byte, len(connectRequest))
	if _, err := io.ReadFull(c, req); err != nil {
		return err
	}
	_, err := c.Write(connectReply)
	return err
}

// memory opens IdleConns connections through the gateway, each after a
// one-byte exchange so that both of its sides exist, and reads the
// gateway's RSS before and after. The server is a process of its own (see
// echoproc.go), so that 10,000 connections fit the open-file limit.
func (t *target) memory(ctx context.Context, o Options) (figures, error) {
	if t.gw == nil {
		return nil, nil // no gateway process to measure
	}
	srv, err := StartEcho(ctx, t.lab.Server(), o.Gateway)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	// One connection first, so that lazily built state (buffer pools,
	// the first dialer) is in the baseline.
	if err := t.idleConns(ctx, srv.Addr(), 1, func() error { return nil }); err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
		return nil, err
	}
	before, err := processRSS(t.gw.Pid())
	if err != nil {
		return nil, err
	}
	mb, err := t.memBreakdown(ctx)
	if err != nil {
		return nil, err
	}
	var after int64
	var ma memStats
	err = t.idleConns(ctx, srv.Addr(), o.IdleConns, func() error {
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
		if after, err = processRSS(t.gw.Pid()); err != nil {
			return err
		}
		ma, err = t.memBreakdown(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	n := float64(o.IdleConns)
	return figures{
		mRSSBase:        float64(before) / mib,
		mRSSIdle:        float64(after) / mib,
		mPerConn:        float64(after-before) / n,
		mHeapPerConn:    float64(ma.heap-mb.heap) / n,
		mStackPerConn:   float64(ma.stack-mb.stack) / n,
		mGoroutinesConn: float64(ma.goroutines-mb.goroutines) / n,
	}, nil
}

// idleConns opens n connections to the echo server at addr, exchanges
// one byte on each, calls while with all of them open, and closes them.
func (t *target) idleConns(ctx context.Context, addr string, n int, while func() error) error {
	conns, err := t.dialN(ctx, addr, n)
	defer closeAll(conns)
	if err != nil {
		return err
	}
	b := []byte{1}
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(dialTimeout))
		if _, err := c.Write(b); err != nil {
			return fmt.Errorf("idle connection %d: %w", i+1, err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return fmt.Errorf("idle connection %d: %w", i+1, err)
		}
	}
	return while()
}

// memStats is the gateway's own account of its memory (its "memory" log
// line, see `gateway run --memprofile`).
type memStats struct{ heap, stack, goroutines int64 }

var memLineRE = regexp.MustCompile(`msg=memory .*heap_inuse=(\d+) stack_inuse=(\d+) goroutines=(\d+)`)

// memBreakdown asks the gateway for its memory figures (SIGUSR1) and reads
// them from its log. The runtime collects garbage first, so the heap
// figure is what is live, not what awaits collection.
func (t *target) memBreakdown(ctx context.Context) (memStats, error) {
	seen := len(memLineRE.FindAllString(t.gw.Output(), -1))
	if err := syscall.Kill(t.gw.Pid(), syscall.SIGUSR1); err != nil {
		return memStats{}, fmt.Errorf("bench: asking the gateway for its memory: %w", err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if all := memLineRE.FindAllStringSubmatch(t.gw.Output(), -1); len(all) > seen {
			m := all[len(all)-1]
			var s memStats
			s.heap, _ = strconv.ParseInt(m[1], 10, 64)
			s.stack, _ = strconv.ParseInt(m[2], 10, 64)
			s.goroutines, _ = strconv.ParseInt(m[3], 10, 64)
			return s, nil
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return memStats{}, err
		}
	}
	return memStats{}, fmt.Errorf("bench: the gateway logged no memory line after SIGUSR1%s", t.gw.LogTail())
}

// udpDatagram is the UDP test's payload size: a full QUIC packet at a
// 1280-byte path MTU.
const udpDatagram = 1200

// udp blasts datagrams from one connected app socket to a server in S and
// counts what arrives: the rate the path delivers, and what it loses
// (the TUN queue, the stack's flow queue, a socket buffer) when the sender
// outruns it. Sent and received are counted over the same window.
func (t *target) udp(ctx context.Context, o Options) (figures, error) {
	srv, err := t.lab.Server().ListenPacket("udp4", netlab.ServerAddr4+":0")
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	var sent, received, receivedBytes atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			received.Add(1)
			receivedBytes.Add(int64(n))
		}
	}()
	c, err := t.dialer.DialContext(ctx, "udp4", srv.LocalAddr().String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var stopped atomic.Bool
	var fail firstErr
	done := make(chan struct{})
	go func() {
		defer close(done)
		payload := make([]byte, udpDatagram)
		for !stopped.Load() {
			if _, err := c.Write(payload); err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOBUFS) {
					continue
				}
				if !stopped.Load() {
					fail.set(fmt.Errorf("udp send: %w", err))
				}
				return
			}
			sent.Add(1)
		}
	}()
	defer func() {
		stopped.Store(true)
		c.Close()
		<-done
	}()
	if err := sleepCtx(ctx, o.warmup()); err != nil {
		return nil, err
	}
	u0, err0 := t.usage()
	s0, r0, b0 := sent.Load(), received.Load(), receivedBytes.Load()
	if err := sleepCtx(ctx, o.Duration); err != nil {
		return nil, err
	}
	u1, err1 := t.usage()
	s1, r1, b1 := sent.Load(), received.Load(), receivedBytes.Load()
	if err := errors.Join(err0, err1, fail.get()); err != nil {
		return nil, err
	}
	if r1 == r0 {
		return nil, errors.New("no datagram arrived in the measured time")
	}
	secs := u1.at.Sub(u0.at).Seconds()
	loss := 0.0
	if s1 > s0 {
		loss = max(0, 100*(1-float64(r1-r0)/float64(s1-s0)))
	}
	return figures{
		mDatagrams:  float64(r1-r0) / secs,
		mMbit:       float64(b1-b0) * 8 / secs / 1e6,
		mLoss:       loss,
		mMachineCPU: (u1.machine - u0.machine).Seconds() / (float64(b1-b0) / 1e9),
	}, nil
}
