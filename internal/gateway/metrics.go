package gateway

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/gvisor"
	"github.com/tungate/tungate/stack/tcp"
	"github.com/tungate/tungate/tun"
)

// metrics is the gateway's Prometheus collector. Counters are read from
// the components' snapshots when scraped, so nothing is paid per packet;
// the dial histogram is fed by the proxy's events and the rule hits by
// the router's atomic counters.
type metrics struct {
	stackKind string
	version   string
	px        *proxy.Proxy
	st        stack.Stack
	ts        *tun.Stats
	ds        *dnsSide
	routing   *atomic.Pointer[routing]
	reloads   *reloader

	dial *prometheus.HistogramVec // by outbound and result
}

var (
	descBuild        = desc("build_info", "The gateway's version and stack; always 1.", "version", "stack")
	descTCPConns     = desc("tcp_connections", "TCP connections in the stack by state; DIALING: SYN received, upstream dial in progress.", "stack", "state")
	descTCPOpened    = desc("tcp_connections_opened_total", "TCP connections whose handshake completed after their upstream connected.", "stack")
	descTCPRejected  = desc("tcp_connections_rejected_total", "TCP connections answered with a RST instead of relayed, by reason.", "reason")
	descTCPResets    = desc("tcp_connections_reset_total", "TCP relays ended by a RST from one side.", "side")
	descTCPTimeouts  = desc("tcp_connections_timed_out_total", "TCP connections ended by a timeout: the upstream connect, the idle timeout, the half-close timeout.", "timeout")
	descTCPClosedAPI = desc("tcp_connections_closed_by_api_total", "Flows (TCP and UDP) ended through DELETE /connections.")
	descTCPRelays    = desc("tcp_relays", "TCP relays running now.")
	descCookiesSent  = desc("tcp_syn_cookies_sent_total", "SYN-ACKs carrying a SYN cookie (RFC 4987), sent while the SYN queue was full.", "stack")
	descCookiesValid = desc("tcp_syn_cookies_validated_total", "ACKs whose SYN cookie was valid, completing a handshake without state.", "stack")
	descChallenge    = desc("tcp_challenge_acks_total", "Challenge ACKs sent (RFC 5961).", "stack")
	descRetrans      = desc("tcp_retransmits_total", "TCP segments retransmitted.", "stack")
	descRTOs         = desc("tcp_retransmission_timeouts_total", "TCP retransmission timer expiries (RTO).", "stack")
	descRSTsSent     = desc("tcp_rsts_sent_total", "TCP RST segments sent to apps.", "stack")
	descBytes        = desc("relayed_bytes_total", "Payload bytes relayed; up is app→upstream.", "network", "direction")
	descRuleHits     = desc("rule_hits_total", "Flows routed by each rule of route.rules (rule is its index, or final), since the rules were last loaded.", "rule", "outbound")
	descDNSQueries   = desc("dns_queries_total", "DNS queries the gateway handled.")
	descDNSAnswers   = desc("dns_answers_total", "DNS queries by how they were answered or dropped.", "answer")
	descFakeIPUsed   = desc("dns_fake_ip_pool_domains", "Domains holding fake addresses.")
	descFakeIPCap    = desc("dns_fake_ip_pool_capacity_domains", "Domains the fake-IP pool holds before it evicts the least recently used.")
	descTUNPackets   = desc("tun_packets_total", "IP packets through the TUN; read is from the apps.", "direction")
	descTUNBytes     = desc("tun_bytes_total", "IP bytes through the TUN.", "direction")
	descTUNErrors    = desc("tun_errors_total", "Failed TUN reads and writes.", "direction")
	descUDPSessions  = desc("udp_sessions", "UDP sessions (mappings) open now.")
	descUDPOpened    = desc("udp_sessions_opened_total", "UDP sessions opened.")
	descUDPEnded     = desc("udp_sessions_ended_total", "UDP sessions ended early, by reason.", "reason")
	descUDPFlows     = desc("udp_flows_total", "UDP flows (app socket and destination) relayed.")
	descUDPDropped   = desc("udp_flows_dropped_total", "UDP flows not relayed (no UDP, refused, dial failed).")
	descUDPPackets   = desc("udp_datagrams_total", "UDP datagrams relayed.", "direction")
	descReloads      = desc("config_reloads_total", "Configuration reloads (SIGHUP, PUT /configs/reload): applied, or rejected as a whole.", "result")
	descReloadOK     = desc("config_last_reload_successful", "Whether the last reload was applied (1) or rejected (0); 1 before any.")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("tungate_"+name, help, labels, nil)
}

// newRegistry returns a registry with the gateway's collector, the Go
// runtime's and the process's (open descriptors, RSS, CPU).
func newRegistry(m *metrics) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, m.dial, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func newMetrics() *metrics {
	return &metrics{
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tungate_dial_duration_seconds",
			Help:    "Time to connect upstream, per outbound; result is ok or error.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outbound", "result"}),
	}
}

// observe feeds the dial histogram; it is a proxy.Observer.
func (m *metrics) observe(ev proxy.Event) {
	if ev.Kind != proxy.EventDialDone {
		return
	}
	result := "ok"
	if ev.Err != nil {
		result = "error"
	}
	m.dial.WithLabelValues(ev.Route.Outbound, result).Observe(ev.Elapsed.Seconds())
}

// Describe implements prometheus.Collector with what Collect reports: the
// stack kind and the DNS side, which decide that, are fixed for a run.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(m, ch) }

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	gauge(ch, descBuild, 1, m.version, m.stackKind)
	m.collectStack(ch)
	m.collectProxy(ch)
	m.collectRules(ch)
	m.collectDNS(ch)
	if r := m.reloads; r != nil {
		counter(ch, descReloads, r.applied.Load(), "applied")
		counter(ch, descReloads, r.rejected.Load(), "rejected")
		ok := 1.0
		if r.lastFailed.Load() {
			ok = 0
		}
		gauge(ch, descReloadOK, ok)
	}
	if ts := m.ts; ts != nil {
		counter(ch, descTUNPackets, ts.ReadPackets.Load(), "read")
		counter(ch, descTUNPackets, ts.WritePackets.Load(), "write")
		counter(ch, descTUNBytes, ts.ReadBytes.Load(), "read")
		counter(ch, descTUNBytes, ts.WriteBytes.Load(), "write")
		counter(ch, descTUNErrors, ts.ReadErrors.Load(), "read")
		counter(ch, descTUNErrors, ts.WriteErrors.Load(), "write")
	}
}

func (m *metrics) collectStack(ch chan<- prometheus.Metric) {
	k := m.stackKind
	switch s := m.st.(type) {
	case interface{ Stats() tcp.Stats }: // *tcp.Engine, *tcp.Shards
		es := s.Stats()
		states(ch, k, es.States)
		gauge(ch, descTCPConns, float64(es.Pending), k, "DIALING")
		counter(ch, descTCPOpened, es.Accepted, k)
		counter(ch, descCookiesSent, es.CookiesSent, k)
		counter(ch, descCookiesValid, es.CookiesValid, k)
		counter(ch, descChallenge, es.ChallengeAcks, k)
		counter(ch, descRetrans, es.Retransmits, k)
		counter(ch, descRTOs, es.RTOs, k)
		counter(ch, descRSTsSent, es.RSTsSent, k)
	case *gvisor.Stack:
		gs := s.Stats()
		states(ch, k, gs.States)
		counter(ch, descTCPOpened, gs.TCPAccepted, k)
		counter(ch, descCookiesSent, gs.CookiesSent, k)
		counter(ch, descCookiesValid, gs.CookiesValid, k)
		counter(ch, descChallenge, 0, k) // gVisor does not count them
		counter(ch, descRetrans, gs.Retransmits, k)
		counter(ch, descRTOs, gs.RTOs, k)
		counter(ch, descRSTsSent, gs.RSTsSent, k)
	}
}

// states reports every RFC 9293 state, zero where no connection is in
// it, so that a series does not vanish when its last connection leaves.
func states(ch chan<- prometheus.Metric, kind string, by map[string]int) {
	for s := tcp.Closed + 1; s <= tcp.TimeWait; s++ {
		if s == tcp.Listen {
			continue
		}
		gauge(ch, descTCPConns, float64(by[s.String()]), kind, s.String())
	}
}

func (m *metrics) collectProxy(ch chan<- prometheus.Metric) {
	s := m.px.Stats()
	for reason, v := range map[string]uint64{
		"upstream_refused": s.TCPRefused, "upstream_timeout": s.TCPTimedOut, "dial_failed": s.TCPDialFailed,
		"rule_reject": s.TCPRouteRejected, "policy": s.TCPPolicyRejected, "limit": s.TCPLimitRejected,
		"app_gone": s.TCPAcceptFailed,
	} {
		counter(ch, descTCPRejected, v, reason)
	}
	counter(ch, descTCPResets, s.ResetsFromApp, "app")
	counter(ch, descTCPResets, s.ResetsFromUpstream, "upstream")
	counter(ch, descTCPTimeouts, s.TCPTimedOut, "connect")
	counter(ch, descTCPTimeouts, s.IdleTimeouts, "idle")
	counter(ch, descTCPTimeouts, s.HalfCloseTimeouts, "half_close")
	counter(ch, descTCPClosedAPI, s.ClosedByAPI)
	gauge(ch, descTCPRelays, float64(s.TCPActive))
	counter(ch, descBytes, s.BytesUp, "tcp", "up")
	counter(ch, descBytes, s.BytesDown, "tcp", "down")
	counter(ch, descBytes, s.UDPBytesUp, "udp", "up")
	counter(ch, descBytes, s.UDPBytesDown, "udp", "down")
	gauge(ch, descUDPSessions, float64(s.UDPActive))
	counter(ch, descUDPOpened, s.UDPSessions)
	counter(ch, descUDPEnded, s.UDPEvicted, "evicted")
	counter(ch, descUDPEnded, s.UDPIdleTimeouts, "idle")
	counter(ch, descUDPFlows, s.UDPFlows)
	counter(ch, descUDPDropped, s.UDPDropped)
	counter(ch, descUDPPackets, s.UDPPacketsUp, "up")
	counter(ch, descUDPPackets, s.UDPPacketsDown, "down")
}

func (m *metrics) collectRules(ch chan<- prometheus.Metric) {
	rt := m.routing.Load()
	if rt == nil {
		return
	}
	for i := range rt.hits {
		name, ob := strconv.Itoa(i), rt.outboundOf(i)
		if i == len(rt.hits)-1 {
			name = "final"
		}
		counter(ch, descRuleHits, rt.hits[i].Load(), name, ob)
	}
}

func (m *metrics) collectDNS(ch chan<- prometheus.Metric) {
	d := m.ds
	if d == nil {
		return
	}
	s := d.server.Stats()
	counter(ch, descDNSQueries, s.Queries)
	counter(ch, descDNSAnswers, s.FakeAnswers, "fake_ip")
	counter(ch, descDNSAnswers, s.CacheHits, "cache")
	counter(ch, descDNSAnswers, s.Forwarded, "forwarded")
	counter(ch, descDNSAnswers, s.ServFail, "servfail")
	counter(ch, descDNSAnswers, s.Malformed+s.Oversized+s.NotQuery, "malformed")
	counter(ch, descDNSAnswers, s.Busy, "busy")
	if d.pool != nil {
		gauge(ch, descFakeIPUsed, float64(d.pool.Len()))
		gauge(ch, descFakeIPCap, float64(d.pool.Capacity()))
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}
