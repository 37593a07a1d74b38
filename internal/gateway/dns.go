package gateway

import (
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
// hijacked queries, the fake-IP pool, and the resolver direct outbounds
// look names up with (dns.servers, never the system's, which may be the
// TUN itself).
type dnsSide struct {
	server   *dns.Server
	pool     *dns.Pool // nil in forward mode
	resolver *net.Resolver
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
	d := &dnsSide{}
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
		// Direct outbounds need real answers: a forwarding server of
		// their own, with its own cache.
		d.resolver = &net.Resolver{PreferGo: true, Dial: dns.NewServer(forward).DialContext}
		log.Info("dns: hijacking port 53 with fake addresses", "range", c.FakeIPRange, "range6", c.FakeIP6Range,
			"known", pool.Len(), "capacity", pool.Capacity(), "servers", c.Servers, "cache_file", c.CacheFile)
	} else {
		d.server = dns.NewServer(forward)
		d.resolver = &net.Resolver{PreferGo: true, Dial: d.server.DialContext}
		log.Info("dns: hijacking port 53, forwarding", "servers", c.Servers)
	}
	return d, nil
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
