package config

import (
	"net"
	"net/netip"
	"strings"
)

// DefaultTraceBuffer is api.trace_buffer's default: the ladders of the
// last 256 connections, a few hundred KiB at most.
const DefaultTraceBuffer = 256

// API configures the HTTP API (metrics, connections, web view, reload).
type API struct {
	// Listen is where the API listens: host:port ("127.0.0.1:9090") or
	// the path of a unix socket (any value with a "/"). Empty is off.
	Listen string `mapstructure:"listen"`
	// Secret is the bearer token every request must carry
	// ("Authorization: Bearer <secret>"). It is required unless Listen
	// is a loopback address or a unix socket.
	Secret string `mapstructure:"secret"`
	// TraceBuffer is how many connections' handshake and teardown
	// ladders GET /connections/{id}/trace keeps after they close; 0
	// keeps none (live connections still have theirs).
	TraceBuffer int `mapstructure:"trace_buffer"`
}

// IsUnix reports whether Listen names a unix socket.
func (a *API) IsUnix() bool { return strings.Contains(a.Listen, "/") }

// IsLocal reports whether only this machine can reach Listen: a unix
// socket or a loopback address ("localhost" counts).
func (a *API) IsLocal() bool {
	if a.IsUnix() {
		return true
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (a *API) validate(ps *problems) {
	if a.TraceBuffer < 0 || a.TraceBuffer > 1<<16 {
		ps.add("api.trace_buffer", "is %d; want 0–65536 connections", a.TraceBuffer)
	}
	if a.Listen == "" {
		return
	}
	if !a.IsUnix() {
		addr := a.Listen
		if strings.HasPrefix(addr, ":") {
			addr = "0.0.0.0" + addr // every address
		}
		if msg := checkHostPort(addr); msg != "" {
			ps.add("api.listen", "%s; want host:port (127.0.0.1:9090) or a unix socket path", msg)
			return
		}
	}
	if a.Secret == "" && !a.IsLocal() {
		ps.add("api.secret", "is required: api.listen %q is reachable from other machines (only loopback and unix sockets may go without)", a.Listen)
	}
}
