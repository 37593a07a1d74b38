package gateway

import (
	"fmt"
	"log/slog"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/tcp"
	"github.com/tungate/tungate/tun"
)

// newCustom builds the own TCP engine from the config.
func newCustom(cfg *config.Config, w stack.PacketWriter, h stack.Handler, tr *tcp.Tracer, log *slog.Logger) (*tcp.Engine, error) {
	opts := customOptions(cfg)
	opts.Trace = tr
	opts.Logger = log
	e, err := tcp.New(w, h, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: custom stack: %w", err)
	}
	return e, nil
}

// newCustomShards builds the own engine with one shard per TUN queue,
// shard i writing to queue i.
func newCustomShards(cfg *config.Config, queues []tun.Device, h stack.Handler, tr *tcp.Tracer, log *slog.Logger) (*tcp.Shards, error) {
	opts := customOptions(cfg)
	opts.Trace = tr
	opts.Logger = log
	ws := make([]stack.PacketWriter, len(queues))
	for i, q := range queues {
		ws[i] = tun.NewWriter(q)
	}
	s, err := tcp.NewShards(ws, h, opts)
	if err != nil {
		return nil, fmt.Errorf("gateway: custom stack: %w", err)
	}
	log.Info("custom stack: one shard per TUN queue", "shards", s.Len())
	return s, nil
}

// customOptions maps stack.custom (and the TUN's MTU) to the engine's
// options.
func customOptions(cfg *config.Config) tcp.Options {
	c := cfg.Stack.Custom
	opts := tcp.DefaultOptions()
	opts.MTU = cfg.TUN.MTU
	opts.TCB.SACK, opts.TCB.Timestamps, opts.TCB.WindowScale = c.SACK, c.Timestamps, c.WindowScale
	opts.TCB.NoDelay = c.NoDelay
	opts.TCB.TailLossProbe = c.TailLossProbe
	opts.TCB.RecvBufSize, opts.TCB.RecvBufMax = c.ReceiveBufferSize, c.ReceiveBufferMax
	opts.TCB.SendBufSize = c.SendBufferSize
	opts.TCB.BufferIdle = c.BufferIdle
	opts.TCB.CongestionControl = c.CongestionControl
	opts.TCB.DelayedAck = c.DelayedAck
	opts.TCB.MSL2 = c.TimeWait
	opts.TCB.FinWait2Timeout = c.FinWait2Timeout
	opts.TCB.SynAckRetries = c.SynAckRetries
	opts.TCB.KeepaliveIdle, opts.TCB.KeepaliveInterval = c.KeepaliveIdle, c.KeepaliveInterval
	opts.TCB.KeepaliveCount = c.KeepaliveCount
	opts.SynBacklog, opts.PendingBacklog = c.SynBacklog, c.PendingBacklog
	opts.MaxTimeWait = c.MaxTimeWait
	opts.TCB.ChallengeAckLimit, opts.ChallengeAckGlobalLimit = noLimitIfZero(c.ChallengeAckLimit), noLimitIfZero(c.ChallengeAckGlobalLimit)
	return opts
}

// noLimitIfZero maps the config's 0 (no limit) to the engine's negative.
func noLimitIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// traceObserver prints the proxy's upstream-side events of traced flows
// next to the engine's segments, completing the ladder, and names each
// recorded ladder by its flow's ID. Without the own engine (noEngine),
// the ladders hold these events alone, from the route to the end.
func traceObserver(tr *tcp.Tracer, noEngine bool) proxy.Observer {
	return func(ev proxy.Event) {
		if !tr.Match(ev.Flow) {
			return
		}
		if noEngine {
			switch {
			case ev.Kind == proxy.EventRoute:
				tr.Open(ev.Flow)
			case ev.Kind == proxy.EventClose || ev.Kind == proxy.EventReject ||
				ev.Kind == proxy.EventAccept && ev.Err != nil:
				defer tr.Done(ev.Flow)
			}
		}
		switch ev.Kind {
		case proxy.EventRoute:
			tr.Bind(ev.Flow, ev.Conn)
			tr.Upstream(ev.Flow, ev.Route.String())
			if noEngine && ev.Route.Action == proxy.ActionDrop {
				tr.Done(ev.Flow)
			}
		case proxy.EventDialStart:
			tr.Upstream(ev.Flow, "dial "+ev.Flow.Dst.String())
		case proxy.EventDialDone:
			if ev.Err != nil {
				tr.UpstreamIn(ev.Flow, "dial failed: "+ev.Err.Error())
			} else {
				tr.UpstreamIn(ev.Flow, "connected")
			}
		case proxy.EventReject:
			tr.Upstream(ev.Flow, "flow rejected: RST to the app")
		case proxy.EventEOF:
			if ev.Side == proxy.SideUpstream {
				tr.UpstreamIn(ev.Flow, "FIN (upstream closed its side)")
			}
		case proxy.EventReset:
			if ev.Side == proxy.SideUpstream {
				tr.UpstreamIn(ev.Flow, "RST from upstream")
			}
		case proxy.EventCloseWrite:
			if ev.Side == proxy.SideUpstream {
				tr.Upstream(ev.Flow, "FIN (CloseWrite: app's half-close carried upstream)")
			}
		case proxy.EventAbort:
			if ev.Side == proxy.SideUpstream {
				tr.Upstream(ev.Flow, "RST (abort)")
			}
		case proxy.EventTimeout:
			tr.Upstream(ev.Flow, "timeout: "+fmt.Sprint(ev.Err))
		case proxy.EventClose:
			tr.Upstream(ev.Flow, fmt.Sprintf("relay closed: %d bytes up, %d down", ev.Up, ev.Down))
		}
	}
}
