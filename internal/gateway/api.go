package gateway

import (
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tungate/tungate/api"
	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack/tcp"
)

// newAPI is the API handler over the running gateway's parts.
func newAPI(cfg *config.Config, opts Options, px *proxy.Proxy, reg *prometheus.Registry, rec *tcp.Recorder, rl *reloader) *api.Handler {
	o := api.Options{
		Secret:   cfg.API.Secret,
		Version:  opts.Version,
		Stack:    cfg.Stack.Kind,
		Conns:    proxyConns{px},
		Gatherer: reg,
		Logger:   opts.Logger,
	}
	if rec != nil {
		o.Traces = rec.Ladder
	}
	if opts.Load != nil {
		o.Reload = rl.reload
	}
	return api.New(o)
}

// proxyConns is the proxy as the API's Conns.
type proxyConns struct{ *proxy.Proxy }

func (p proxyConns) Totals() (up, down uint64) {
	s := p.Stats()
	return s.BytesUp + s.UDPBytesUp, s.BytesDown + s.UDPBytesDown
}

// apiURL is how a person on this machine reaches the API a serves.
func apiURL(a config.API) string {
	if a.IsUnix() {
		return "unix:" + a.Listen
	}
	host, port, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return a.Listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
