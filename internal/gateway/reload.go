package gateway

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/tungate/tungate/api"
	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/proxy"
)

// reloader applies a configuration read again to the running gateway:
// rules, outbounds, DNS servers, limits, log level and the API secret
// take effect for new flows at once; flows running keep what they have.
// Keys that need a restart keep their old values and are reported.
type reloader struct {
	load     func() (*config.Config, error)
	upstream proxy.Dialer // Options.Dialer
	routes   *atomic.Pointer[routing]
	px       *proxy.Proxy
	ds       *dnsSide
	level    *slog.LevelVar // nil: the log level is fixed
	api      *api.Handler   // nil without api.listen
	log      *slog.Logger

	mu  sync.Mutex     // serialises reloads; guards cur
	cur *config.Config // the configuration in force, prepared

	// applied and rejected count the reloads; lastFailed is whether the
	// last one was rejected (for alerts on a broken file).
	applied, rejected atomic.Uint64
	lastFailed        atomic.Bool
}

// reload reads the configuration and applies it, or applies nothing and
// returns why: every problem of an invalid file is logged.
func (r *reloader) reload() (api.ReloadReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.load == nil {
		return api.ReloadReport{}, errors.New("gateway: reload: no configuration source")
	}
	next, err := r.load()
	if err != nil {
		r.logRejected(err)
		return api.ReloadReport{}, err
	}
	next = prepare(next)
	keep := config.WithRestartOnly(r.cur, next)
	rep := api.ReloadReport{Applied: []string{}, RestartRequired: []string{}}
	for _, key := range config.Changed(r.cur, next) {
		if config.NeedsRestart(key) {
			rep.RestartRequired = append(rep.RestartRequired, key)
		} else {
			rep.Applied = append(rep.Applied, key)
		}
	}
	if r.ds != nil {
		// The outbounds' resolvers read the servers when built.
		r.ds.servers = keep.DNS.Servers
	}
	rt, err := buildRouting(keep, r.upstream, r.ds)
	if err != nil {
		if r.ds != nil {
			r.ds.servers = r.cur.DNS.Servers
		}
		r.logRejected(err)
		return api.ReloadReport{}, err
	}
	if r.ds != nil {
		r.ds.server.SetServers(keep.DNS.Servers, keep.DNS.DomainExclude)
	}
	r.routes.Store(rt)
	r.px.SetLimits(proxyLimits(keep, r.log))
	if r.level != nil {
		r.level.Set(logLevel(keep.Log))
	}
	if r.api != nil {
		r.api.SetSecret(keep.API.Secret)
	}
	r.cur = keep
	r.applied.Add(1)
	r.lastFailed.Store(false)
	for _, key := range rep.RestartRequired {
		r.log.Warn("config reload: this key changed but applies only after a restart; the old value stays", "key", key)
	}
	r.log.Info("config reloaded: new flows use it, running ones go on", "applied", rep.Applied,
		"restart_required", rep.RestartRequired)
	return rep, nil
}

func (r *reloader) logRejected(err error) {
	r.rejected.Add(1)
	r.lastFailed.Store(true)
	var ce *config.Error
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			r.log.Error("config reload rejected", "problem", p.Error())
		}
	} else {
		r.log.Error("config reload rejected", "err", err)
	}
	r.log.Warn("config reload: nothing applied; the configuration in force keeps serving")
}

// prepare is cfg as the gateway runs it: under auto_route its own
// sockets carry the mark that lets them skip the capture.
func prepare(cfg *config.Config) *config.Config {
	marked := *cfg
	marked.Upstream.Fwmark = cfg.SocketMark()
	return &marked
}

// proxyLimits are cfg's proxy limits, resolved against the open-file
// limit.
func proxyLimits(cfg *config.Config, log *slog.Logger) proxy.Limits {
	return proxy.Limits{
		ConnectTimeout:   cfg.Upstream.ConnectTimeout,
		IdleTimeout:      cfg.Proxy.IdleTimeout,
		HalfCloseTimeout: cfg.Proxy.HalfCloseTimeout,
		UDPIdleTimeout:   cfg.Proxy.UDPIdleTimeout,
		MaxConnections:   maxConnections(cfg.Proxy, log),
		MaxUDPSessions:   maxUDPSessions(cfg.UDP, log),
		UDPNAT:           natMode(cfg.UDP.NAT),
	}
}

// logLevel is log.level's slog level; validation accepted it.
func logLevel(l config.Log) slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return slog.LevelInfo
	}
	return level
}
