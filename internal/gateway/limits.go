package gateway

import (
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/proxy"
)

// maxConnections resolves proxy.max_connections against the process's
// open-file limit (the Go runtime has already raised the soft limit to the
// hard one) and says at start what it chose, and when the key is set above
// what the descriptors allow.
func maxConnections(p config.Proxy, log *slog.Logger) int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("proxy: cannot read the open-file limit; proxy.max_connections applies as set", "err", err)
		return p.MaxConnectionsFor(1 << 20)
	}
	n := p.MaxConnectionsFor(rl.Cur)
	switch {
	case p.MaxConnections == 0:
		log.Info("proxy: connection limit derived from the open-file limit", "max_connections", n, "nofile", rl.Cur)
	case n > 0 && uint64(n) >= rl.Cur:
		log.Warn("proxy: proxy.max_connections is at or above the open-file limit; dials will fail with EMFILE first",
			"max_connections", n, "nofile", rl.Cur)
	}
	return n
}

// maxUDPSessions resolves udp.max_sessions against the open-file limit.
func maxUDPSessions(u config.UDP, log *slog.Logger) int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return u.MaxSessionsFor(1 << 20)
	}
	n := u.MaxSessionsFor(rl.Cur)
	if u.MaxSessions == 0 {
		log.Info("udp: session limit derived from the open-file limit", "max_sessions", n, "nofile", rl.Cur)
	}
	return n
}

// natMode is udp.nat's proxy.NATMode.
func natMode(nat string) proxy.NATMode {
	if nat == config.NATSymmetric {
		return proxy.NATSymmetric
	}
	return proxy.NATFullCone
}
