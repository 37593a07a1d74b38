// Package gateway is the composition root: config → TUN → stack → proxy.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/tungate/tungate/api"
	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/gvisor"
	"github.com/tungate/tungate/stack/tcp"
	"github.com/tungate/tungate/tun"
	"github.com/tungate/tungate/tun/faulty"
)

// Options are the run-time choices that are not part of the config file.
type Options struct {
	// PcapPath, when set, names a file that receives every packet read from
	// or written to the TUN.
	PcapPath string
	// Trace selects connections whose packets and state transitions are
	// printed as a ladder (a port, an address or addr:port); empty is off.
	Trace string
	// Faults, when set, is a tun/faulty spec ("loss=0.01,reorder=0.02,
	// seed=1"): seeded loss, duplication, reordering and delay injected
	// between the TUN and the stack, for tests and benchmarks.
	Faults string
	// Logger receives the gateway's logs; nil discards them.
	Logger *slog.Logger
	// Dialer, when set, replaces the TCP upstream dialer built from the
	// config (for embedding the gateway, and for tests).
	Dialer proxy.Dialer
	// TraceOut receives the --trace ladder; nil means standard output.
	TraceOut io.Writer
	// Version is reported by the API's /version and the build_info metric.
	Version string
	// Load reads the configuration again, for a reload (SIGHUP, PUT
	// /configs/reload); nil means the gateway cannot reload.
	Load func() (*config.Config, error)
	// Reload asks for a reload each time it receives.
	Reload <-chan struct{}
	// LogLevel, when set, is the level of Logger's handler, which a
	// reload changes to the new log.level.
	LogLevel *slog.LevelVar
	// Ready, when set, is called once the gateway serves: the TUN, its
	// routes, the stack and the API are up (systemd's READY=1).
	Ready func()
	// APIListener, when set, is where Serve serves the API instead of
	// opening api.listen itself; Serve closes it. Run opens it before the
	// TUN, so that a port in use fails the start before anything on the
	// host changed.
	APIListener net.Listener
}

// Run brings the gateway up from cfg on a new TUN device and serves until
// ctx is done, then shuts down cleanly: connections closed, TUN removed,
// and with tun.auto_route every rule and route it added removed again.
// Conflicts of auto_route with the host's rules are *config.Error.
func Run(ctx context.Context, cfg *config.Config, opts Options) (err error) {
	log := logger(opts.Logger)
	cfg = prepare(cfg)
	if cfg.API.Listen != "" && opts.APIListener == nil {
		ln, err := api.Listen(cfg.API.Listen)
		if err != nil {
			return fmt.Errorf("gateway: api.listen: %w", err)
		}
		opts.APIListener = ln
		defer ln.Close() // when the start fails before Serve takes it
	}
	if opts.Trace != "" && cfg.Stack.Kind != config.StackCustom {
		return fmt.Errorf("gateway: --trace needs stack.kind custom (the gVisor stack has no trace hooks)")
	}
	var faults *faulty.Config
	if opts.Faults != "" {
		fc, err := faulty.ParseSpec(opts.Faults)
		if err != nil {
			return fmt.Errorf("gateway: --faults: %w", err)
		}
		fc.Logger = log
		faults = &fc
	}
	offload := cfg.TUN.Offload == config.OffloadAuto
	switch {
	case offload && cfg.Stack.Kind != config.StackCustom:
		offload = false
		log.Info("tun offload off: the gvisor stack takes segments", "stack", cfg.Stack.Kind)
	case offload && faults != nil:
		offload = false
		log.Info("tun offload off: --faults hits single segments")
	case !offload:
		log.Info("tun offload off: tun.offload is off")
	}
	queues := cfg.TUN.QueueCount(runtime.NumCPU())
	switch {
	case queues <= 1:
	case !offload:
		queues = 1
		log.Info("tun queues: 1: more need the superpacket path (tun.offload auto, stack.kind custom, no --faults)")
	case opts.PcapPath != "":
		queues = 1
		log.Info("tun queues: 1: --pcap taps a single queue")
	}
	dev, err := tun.Open(tun.Config{
		Name:      cfg.TUN.Name,
		MTU:       cfg.TUN.MTU,
		Addresses: cfg.TUN.Addresses,
		Routes:    cfg.TUN.Routes,
		Offload:   offload,
		Queues:    queues,
	}, log)
	if err != nil {
		return err
	}
	if cfg.TUN.AutoRoute {
		ar, aerr := startAutoRoute(ctx, cfg, dev.Index(), log)
		if aerr != nil {
			dev.Close()
			return aerr
		}
		// After Serve: the last RSTs to the apps still go through the TUN.
		defer func() {
			if rerr := ar.Close(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("gateway: auto-route: %w", rerr))
			}
		}()
	}
	var d tun.Device = dev
	var fd *faulty.Device
	if faults != nil {
		if fd, err = faulty.Wrap(d, *faults); err != nil {
			dev.Close()
			return fmt.Errorf("gateway: --faults: %w", err)
		}
		d = fd
		log.Warn("injecting faults between the TUN and the stack", "faults", faults.String())
	}
	var pcap *os.File
	if opts.PcapPath != "" {
		pcap, err = os.Create(opts.PcapPath)
		if err != nil {
			dev.Close()
			return fmt.Errorf("gateway: pcap: %w", err)
		}
		d = tun.WithPcap(d, pcap, log)
	}
	log.Info("gateway up", "tun", dev.Name(), "mtu", cfg.TUN.MTU, "stack", cfg.Stack.Kind,
		"upstream", cfg.Upstream.Kind)
	opts.Logger = log
	err = Serve(ctx, cfg, d, opts)
	if fd != nil {
		log.Info("faults injected", "stats", fmt.Sprintf("%+v", fd.Stats()))
	}
	if pcap != nil {
		if cerr := pcap.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("gateway: pcap: %w", cerr)
		}
	}
	return err
}

// Serve runs the gateway on an already open device until ctx is done. It
// closes dev before returning.
func Serve(ctx context.Context, cfg *config.Config, dev tun.Device, opts Options) error {
	log := logger(opts.Logger)
	apiLn := opts.APIListener
	if apiLn == nil && cfg.API.Listen != "" {
		var err error
		if apiLn, err = api.Listen(cfg.API.Listen); err != nil {
			dev.Close()
			return fmt.Errorf("gateway: api.listen: %w", err)
		}
	}
	if apiLn != nil {
		defer apiLn.Close() // when serving failed before the server took it
	}
	ds, err := newDNS(cfg, log)
	if err != nil {
		dev.Close()
		return err
	}
	defer func() {
		if cerr := ds.Close(); cerr != nil {
			log.Warn("dns: closing the cache file", "err", cerr)
		}
	}()
	rt, err := buildRouting(cfg, opts.Dialer, ds)
	if err != nil {
		dev.Close()
		return err
	}
	var routes atomic.Pointer[routing]
	routes.Store(rt)
	tr, rec, err := tracers(cfg, opts)
	if err != nil {
		dev.Close()
		return err
	}
	var ts tun.Stats
	// A multi-queue device is read and written queue by queue (the first
	// is dev itself), the own engine running one shard per queue.
	var extra []tun.OffloadDevice
	if mq, ok := dev.(interface{ Queues() []tun.OffloadDevice }); ok && cfg.Stack.Kind == config.StackCustom {
		extra = mq.Queues()[1:]
	}
	dev = tun.WithStats(dev, &ts)
	qdevs := []tun.Device{dev}
	for _, q := range extra {
		qdevs = append(qdevs, tun.WithStats(q, &ts))
	}
	m := newMetrics()
	observers := []proxy.Observer{m.observe}
	if tr != nil {
		observers = append(observers, traceObserver(tr, cfg.Stack.Kind != config.StackCustom))
	}
	px := proxy.New(proxy.Options{
		Router:   router(&routes, ds, log),
		Logger:   log,
		Observer: fanOut(observers),
	})
	px.SetLimits(proxyLimits(cfg, log))
	var st stack.Stack
	stackTracer := tr
	if cfg.Stack.Kind != config.StackCustom {
		stackTracer = nil
	}
	if len(qdevs) > 1 {
		st, err = newCustomShards(cfg, qdevs, px, stackTracer, log)
	} else {
		st, err = NewStack(cfg, tun.NewWriter(dev), px, stackTracer, log)
	}
	if err != nil {
		px.Close()
		dev.Close()
		return err
	}
	m.stackKind, m.version, m.px, m.st, m.ts, m.ds, m.routing = cfg.Stack.Kind, opts.Version, px, st, &ts, ds, &routes
	rl := &reloader{load: opts.Load, upstream: opts.Dialer, routes: &routes, px: px, ds: ds, level: opts.LogLevel,
		log: log, cur: cfg}
	m.reloads = rl
	var apiSrv *api.Server
	if apiLn != nil {
		rl.api = newAPI(cfg, opts, px, newRegistry(m), rec, rl)
		apiSrv = api.Serve(apiLn, rl.api, log)
		log.Info("api listening", "listen", cfg.API.Listen, "ui", apiURL(cfg.API)+"/ui/")
	}

	// One reader per queue; the first to end ends the run.
	readErr := make(chan error, len(qdevs))
	for _, q := range qdevs {
		go func() {
			if ost, ok := st.(stack.OffloadStack); ok && tun.Offloads(q) {
				readErr <- tun.ReadLoopOffload(ctx, q.(tun.OffloadDevice), ost.DeliverInboundOffload)
				return
			}
			readErr <- tun.ReadLoop(ctx, q, st.DeliverInbound)
		}()
	}
	readers := len(qdevs)
	if opts.Ready != nil {
		opts.Ready()
	}

	var runErr error
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-opts.Reload:
			rl.reload() // it logs what it did
		case runErr = <-readErr:
			done = true
			readers--
			if runErr != nil {
				runErr = fmt.Errorf("gateway: %w", runErr)
			}
		}
	}
	// Shut down from the top: the API (no more requests reach the
	// proxy), relays (their aborts still reach the app through the stack
	// and the open device), then the stack, then the device, which ends
	// the read loop.
	if apiSrv != nil {
		if err := apiSrv.Close(); err != nil {
			log.Warn("api: closing", "err", err)
		}
	}
	px.Close()
	st.Close()
	dev.Close()
	for range readers {
		if err := <-readErr; err != nil && runErr == nil && !errors.Is(err, net.ErrClosed) {
			runErr = fmt.Errorf("gateway: %w", err)
		}
	}
	ds.logStats(log)
	logStats(log, px, st, &ts)
	return runErr
}

// tracers builds the --trace tracer and, with the API, the recorder of
// every connection's ladder that the tracer then feeds too.
func tracers(cfg *config.Config, opts Options) (*tcp.Tracer, *tcp.Recorder, error) {
	var tr *tcp.Tracer
	if opts.Trace != "" {
		out := opts.TraceOut
		if out == nil {
			out = os.Stdout
		}
		var err error
		if tr, err = tcp.NewTracer(out, opts.Trace); err != nil {
			return nil, nil, fmt.Errorf("gateway: --trace: %w", err)
		}
	}
	if cfg.API.Listen == "" {
		return tr, nil, nil
	}
	rec := tcp.NewRecorder(cfg.API.TraceBuffer)
	if tr == nil {
		return tcp.NewRecordingTracer(rec), rec, nil
	}
	tr.Record(rec)
	return tr, rec, nil
}

// fanOut is one Observer calling each of obs.
func fanOut(obs []proxy.Observer) proxy.Observer {
	if len(obs) == 1 {
		return obs[0]
	}
	return func(ev proxy.Event) {
		for _, o := range obs {
			o(ev)
		}
	}
}

// NewStack builds the stack cfg.Stack.Kind names, writing to w and handing
// flows to h.
// tr, if not nil, traces matching connections (custom stack only).
func NewStack(cfg *config.Config, w stack.PacketWriter, h stack.Handler, tr *tcp.Tracer, log *slog.Logger) (stack.Stack, error) {
	switch cfg.Stack.Kind {
	case config.StackCustom:
		return newCustom(cfg, w, h, tr, log)
	case "gvisor":
		g := cfg.Stack.GVisor
		return gvisor.New(w, h, gvisor.Options{
			MTU:                   cfg.TUN.MTU,
			SACK:                  g.SACK,
			ReceiveBufferSize:     g.ReceiveBufferSize,
			SendBufferSize:        g.SendBufferSize,
			ModerateReceiveBuffer: g.ModerateReceiveBuffer,
			CongestionControl:     g.CongestionControl,
			MaxInFlightSYN:        g.MaxInFlightSYN,
			Logger:                log,
		})
	default:
		return nil, fmt.Errorf("gateway: stack.kind %q is not available", cfg.Stack.Kind)
	}
}

// Dialer builds the TCP upstream dialer that cfg describes.
func Dialer(cfg config.Upstream) (proxy.Dialer, error) { return dialer(cfg, directOptions(cfg)) }

// dialer is Dialer with the direct dialer's options (its resolver) given.
func dialer(cfg config.Upstream, do proxy.DirectOptions) (proxy.Dialer, error) {
	direct := proxy.NewDirect(do)
	switch cfg.Kind {
	case "direct":
		return direct, nil
	case "socks5":
		return proxy.NewSOCKS5(cfg.Address, cfg.Username, cfg.Password, direct), nil
	case "http":
		return proxy.NewHTTP(cfg.Address, cfg.Username, cfg.Password, direct), nil
	default:
		return nil, fmt.Errorf("gateway: upstream.kind %q is not supported", cfg.Kind)
	}
}

func directOptions(cfg config.Upstream) proxy.DirectOptions {
	return proxy.DirectOptions{Fwmark: cfg.Fwmark, BindInterface: cfg.BindInterface}
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}

// logStats writes the counters of one run at info, so that a shutdown
// always leaves a summary of what happened.
func logStats(log *slog.Logger, px *proxy.Proxy, st stack.Stack, ts *tun.Stats) {
	log.Info("tun stats", "read_packets", ts.ReadPackets.Load(), "read_bytes", ts.ReadBytes.Load(),
		"write_packets", ts.WritePackets.Load(), "write_bytes", ts.WriteBytes.Load(),
		"write_errors", ts.WriteErrors.Load())
	log.Info("proxy stats", "stats", fmt.Sprintf("%+v", px.Stats()))
	switch s := st.(type) {
	case *gvisor.Stack:
		log.Info("gvisor stats", "stats", fmt.Sprintf("%+v", s.Stats()))
	case interface{ Stats() tcp.Stats }: // *tcp.Engine, *tcp.Shards
		es := s.Stats()
		log.Info("engine connections", "pending", es.Pending, "states", fmt.Sprint(es.States))
		es.States = nil
		log.Info("engine stats", "stats", fmt.Sprintf("%+v", es))
	}
	log.Info("gateway stopped")
}
