package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/tun/tuntest"
)

// serveOpts is serveWith with Options of the test's own.
func serveOpts(t *testing.T, cfg *config.Config, opts Options) *tuntest.Device {
	t.Helper()
	if opts.Dialer == nil {
		opts.Dialer = loopbackDialer{}
	}
	dev := tuntest.New(cfg.TUN.MTU)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan struct{})
	opts.Ready = func() { close(ready) }
	go func() { done <- Serve(ctx, cfg, dev, opts) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve never became ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return dev
}

// apiClient talks to an API on a unix socket.
type apiClient struct {
	t *testing.T
	c *http.Client
}

func newAPIClient(t *testing.T, sock string) *apiClient {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &apiClient{t: t, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (a *apiClient) do(method, path string) (int, []byte) {
	a.t.Helper()
	req, _ := http.NewRequest(method, "http://tungate"+path, nil)
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type apiConn struct {
	ID       string            `json:"id"`
	State    string            `json:"state"`
	Chains   []string          `json:"chains"`
	Metadata map[string]string `json:"metadata"`
}

// waitConn polls /connections until one connection is in state.
func (a *apiClient) waitConn(state string) apiConn {
	a.t.Helper()
	giveUp := time.Now().Add(10 * time.Second)
	for {
		_, b := a.do("GET", "/connections")
		var rep struct{ Connections []apiConn }
		if err := json.Unmarshal(b, &rep); err != nil {
			a.t.Fatalf("/connections: %v: %s", err, b)
		}
		if len(rep.Connections) == 1 && rep.Connections[0].State == state {
			return rep.Connections[0]
		}
		if time.Now().After(giveUp) {
			a.t.Fatalf("connections %s, want one %s", b, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ack(t *testing.T, src, dst netip.AddrPort, seq, ackNum uint32) []byte {
	t.Helper()
	b := make([]byte, 100)
	n, err := packet.BuildTCP(b, packet.TCPHeader{Src: src, Dst: dst, Seq: seq, Ack: ackNum, Flags: packet.ACK, Window: 65535}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

func TestServe_APIShowsTracesMeasuresAndAbortsAConnection(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			ln := holdingListener(t)
			cfg := withStack(kind)
			sock := filepath.Join(t.TempDir(), "api.sock")
			cfg.API.Listen = sock
			dev := serveOpts(t, cfg, Options{Version: "v-test"})
			a := newAPIClient(t, sock)

			app, dst := netip.MustParseAddrPort("198.18.0.1:40010"), upstream(ln.Addr().String())
			dev.Inject(syn(t, app, dst))
			sa := nextTCP(t, dev)
			dev.Inject(ack(t, app, dst, 1001, sa.Seq()+1))
			c := a.waitConn("ESTABLISHED")
			if c.Metadata["sourcePort"] != "40010" || c.Metadata["destinationIP"] != "198.19.0.2" || len(c.Chains) != 1 || c.Chains[0] != "upstream" {
				t.Errorf("connection %+v", c)
			}

			code, ladder := a.do("GET", "/connections/"+c.ID+"/trace")
			want := "outbound upstream (final)"
			if kind == config.StackCustom {
				want = "SYN held while the handler decides"
			}
			if code != http.StatusOK || !strings.Contains(string(ladder), want) {
				t.Errorf("trace: %d\n%s\nwant a line with %q", code, ladder, want)
			}

			fams := scrape(t, a)
			if kind == config.StackCustom {
				if v := gaugeOf(fams, "tungate_tcp_connections", "state", "ESTABLISHED"); v != 1 {
					t.Errorf("tungate_tcp_connections{state=ESTABLISHED} = %v, want 1", v)
				}
			}
			if v := counterOf(fams, "tungate_rule_hits_total", "rule", "final"); v != 1 {
				t.Errorf("tungate_rule_hits_total{rule=final} = %v, want 1", v)
			}
			if h := fams["tungate_dial_duration_seconds"]; h == nil || h.Metric[0].GetHistogram().GetSampleCount() != 1 {
				t.Errorf("dial histogram %v, want one dial", h)
			}
			if v := gaugeOf(fams, "tungate_build_info", "version", "v-test"); v != 1 {
				t.Errorf("build_info{version=v-test} = %v", v)
			}

			if code, _ := a.do("DELETE", "/connections/"+c.ID); code != http.StatusNoContent {
				t.Fatalf("DELETE: %d", code)
			}
			if seg := nextTCP(t, dev); !seg.Flags().Has(packet.RST) {
				t.Errorf("after DELETE the app got %v, want a RST", seg.Flags())
			}
		})
	}
}

// holdingListener accepts connections and keeps them open until the test
// ends.
func holdingListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-conns:
				c.Close()
			default:
				return
			}
		}
	})
	return ln
}

func scrape(t *testing.T, a *apiClient) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := a.do("GET", "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	return fams
}

func seriesOf(fams map[string]*dto.MetricFamily, name, label, value string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == label && l.GetValue() == value {
				return m
			}
		}
	}
	return nil
}

func gaugeOf(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	if m := seriesOf(fams, name, label, value); m != nil {
		return m.GetGauge().GetValue()
	}
	return -1
}

func counterOf(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	if m := seriesOf(fams, name, label, value); m != nil {
		return m.GetCounter().GetValue()
	}
	return -1
}

func TestServe_ReloadAppliesRulesToNewFlowsAndKeepsRestartKeys(t *testing.T) {
	ln := holdingListener(t)
	port := netip.MustParseAddrPort(ln.Addr().String()).Port()
	cfg := withStack(config.StackCustom)
	sock := filepath.Join(t.TempDir(), "api.sock")
	cfg.API.Listen = sock
	var next atomic.Pointer[config.Config]
	reload := make(chan struct{})
	dev := serveOpts(t, cfg, Options{Load: func() (*config.Config, error) {
		c := next.Load()
		if err := c.Validate(); err != nil {
			return nil, err
		}
		return c, nil
	}, Reload: reload})
	a := newAPIClient(t, sock)

	app, dst := netip.MustParseAddrPort("198.18.0.1:40020"), upstream(ln.Addr().String())
	dev.Inject(syn(t, app, dst))
	sa := nextTCP(t, dev)
	dev.Inject(ack(t, app, dst, 1001, sa.Seq()+1))
	a.waitConn("ESTABLISHED")

	// A rule refusing the port, and a key that needs a restart.
	withRule := *cfg
	withRule.Route.Rules = []config.Rule{{Port: []uint16{port}, Outbound: config.OutboundReject}}
	withRule.TUN.MTU = 9000
	next.Store(&withRule)
	code, body := a.do("PUT", "/configs/reload")
	var rep struct {
		Applied         []string `json:"applied"`
		RestartRequired []string `json:"restart_required"`
	}
	json.Unmarshal(body, &rep)
	if code != http.StatusOK || !slices.Contains(rep.Applied, "route.rules") || !slices.Equal(rep.RestartRequired, []string{"tun.mtu"}) {
		t.Fatalf("reload: %d %s", code, body)
	}
	app2 := netip.MustParseAddrPort("198.18.0.1:40021")
	dev.Inject(syn(t, app2, dst))
	if seg := nextTCP(t, dev); !seg.Flags().Has(packet.RST) {
		t.Fatalf("a new flow to the refused port got %v, want a RST", seg.Flags())
	}
	a.waitConn("ESTABLISHED") // the running flow is untouched

	// An invalid file changes nothing.
	bad := withRule
	bad.Route.Rules = nil
	bad.Log.Level = "loud"
	next.Store(&bad)
	if code, body := a.do("PUT", "/configs/reload"); code != http.StatusBadRequest || !strings.Contains(string(body), "log.level") {
		t.Fatalf("invalid reload: %d %s, want 400 naming log.level", code, body)
	}
	fams := scrape(t, a)
	if v := counterOf(fams, "tungate_config_reloads_total", "result", "rejected"); v != 1 {
		t.Errorf("tungate_config_reloads_total{rejected} = %v, want 1", v)
	}
	if v := counterOf(fams, "tungate_config_reloads_total", "result", "applied"); v != 1 {
		t.Errorf("tungate_config_reloads_total{applied} = %v, want 1", v)
	}
	if f := fams["tungate_config_last_reload_successful"]; f == nil || f.Metric[0].GetGauge().GetValue() != 0 {
		t.Errorf("tungate_config_last_reload_successful = %v, want 0 after a rejected reload", f)
	}
	dev.Inject(syn(t, netip.MustParseAddrPort("198.18.0.1:40022"), dst))
	if seg := nextTCP(t, dev); !seg.Flags().Has(packet.RST) {
		t.Fatalf("after a rejected reload a new flow got %v, want the rule's RST still", seg.Flags())
	}

	// SIGHUP's way: the rule goes again.
	next.Store(cfg)
	reload <- struct{}{}
	giveUp := time.Now().Add(10 * time.Second)
	for counterOf(scrape(t, a), "tungate_rule_hits_total", "rule", "0") != -1 {
		if time.Now().After(giveUp) {
			t.Fatal("the reload by signal did not replace the rules")
		}
		time.Sleep(5 * time.Millisecond)
	}
	dev.Inject(syn(t, netip.MustParseAddrPort("198.18.0.1:40023"), dst))
	if seg := nextTCP(t, dev); seg.Flags() != packet.SYN|packet.ACK {
		t.Fatalf("after the rule was removed a new flow got %v, want SYN-ACK", seg.Flags())
	}
}

func TestAPIURL_IsWhereAPersonHereOpensIt(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:9090":        "http://127.0.0.1:9090",
		":9090":                 "http://127.0.0.1:9090",
		"[::]:9090":             "http://127.0.0.1:9090",
		"[::1]:9090":            "http://[::1]:9090",
		"/run/tungate/api.sock": "unix:/run/tungate/api.sock",
	} {
		if got := apiURL(config.API{Listen: listen}); got != want {
			t.Errorf("apiURL(%q) = %q, want %q", listen, got, want)
		}
	}
}
