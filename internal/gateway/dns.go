package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/tungate/tungate/dns"
	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/proxy"
)

// dnsSide is the gateway's DNS with dns.hijack: the server that answers
// hijacked queries and the fake-IP pool; direct outbounds look names up
// with dns.servers too (resolverVia), never with the system's resolver,
// which may be the TUN itself.
type dnsSide struct {
	server  *dns.Server
	pool    *dns.Pool // nil in forward mode
	servers []string
	log     *slog.Logger
	// unknownFake counts flows to fake addresses nobody was given
	// (handed out before a restart without cache_file, say).
	unknownFake atomic.Uint64
}

// newDNS builds the DNS side of cfg, nil without dns.hijack.
func newDNS(cfg *config.Config, log *slog.Logger) (*dnsSide, error) {
	c := cfg.DNS
	if !c.Hijack {
		return nil, nil
	}
	dial := proxy.NewDirect(directOptions(cfg.Upstream)).DialContext
	forward := dns.Options{Mode: dns.ModeForward, Servers: c.Servers, Dial: dial, Logger: log}
	d := &dnsSide{servers: c.Servers, log: log}
	if c.Mode == config.DNSFakeIP {
		var store dns.Store
		if c.CacheFile != "" {
			var err error
			if store, err = dns.OpenStore(c.CacheFile); err != nil {
				return nil, fmt.Errorf("gateway: dns.cache_file: %w", err)
			}
		}
		var reserved []netip.Addr
		for _, a := range cfg.TUN.Addresses {
			reserved = append(reserved, a.Addr())
		}
		pool, err := dns.NewPool(c.FakeIPRange, c.FakeIP6Range, reserved, store)
		if err != nil {
			if store != nil {
				store.Close()
			}
			return nil, fmt.Errorf("gateway: dns: %w", err)
		}
		d.pool = pool
		d.server = dns.NewServer(dns.Options{Mode: dns.ModeFakeIP, Pool: pool, Servers: c.Servers, Dial: dial,
			Exclude: c.DomainExclude, Logger: log})
		log.Info("dns: hijacking port 53 with fake addresses", "range", c.FakeIPRange, "range6", c.FakeIP6Range,
			"known", pool.Len(), "capacity", pool.Capacity(), "servers", c.Servers, "cache_file", c.CacheFile)
	} else {
		d.server = dns.NewServer(forward)
		log.Info("dns: hijacking port 53, forwarding", "servers", c.Servers)
	}
	return d, nil
}

// resolverVia is a resolver of dns.servers whose queries leave through
// dial: an outbound's own sockets (its mark and interface), with a cache of
// its own. Without the DNS side, nil: the outbound's system resolver.
func (d *dnsSide) resolverVia(dial func(context.Context, string, string) (net.Conn, error)) *net.Resolver {
	if d == nil {
		return nil
	}
	s := dns.NewServer(dns.Options{Mode: dns.ModeForward, Servers: d.servers, Dial: dial, Logger: d.log})
	return &net.Resolver{PreferGo: true, Dial: s.DialContext}
}

// domain returns the domain of a flow's destination and, for a fake
// address, whether it is one (known or not).
func (d *dnsSide) domain(dst netip.Addr) (name string, fake, known bool) {
	fake = d.pool != nil && d.pool.Contains(dst)
	name, known = d.server.Domain(dst)
	return name, fake, known
}

// Close flushes and closes the fake-IP cache file.
func (d *dnsSide) Close() error {
	if d == nil || d.pool == nil {
		return nil
	}
	return d.pool.Close()
}

func (d *dnsSide) logStats(log *slog.Logger) {
	if d == nil {
		return
	}
	log.Info("dns stats", "stats", fmt.Sprintf("%+v", d.server.Stats()), "unknown_fake_ip", d.unknownFake.Load())
}
