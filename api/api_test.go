package api_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tungate/tungate/api"
	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/proxy"
	"github.com/tungate/tungate/stack"
)

// fakeConns is a proxy with fixed flows.
type fakeConns struct {
	mu       sync.Mutex
	conns    []proxy.ConnInfo
	closed   []uint64
	up, down uint64
}

func (f *fakeConns) Connections() []proxy.ConnInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proxy.ConnInfo(nil), f.conns...)
}

func (f *fakeConns) CloseConnection(id uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, c := range f.conns {
		if c.ID == id {
			f.conns = append(f.conns[:i], f.conns[i+1:]...)
			f.closed = append(f.closed, id)
			return true
		}
	}
	return false
}

func (f *fakeConns) CloseAllConnections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.conns)
	f.conns = nil
	return n
}

func (f *fakeConns) Totals() (uint64, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up, f.down
}

func (f *fakeConns) add(up, down uint64) {
	f.mu.Lock()
	f.up += up
	f.down += down
	f.mu.Unlock()
}

var wall = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func sample() *fakeConns {
	return &fakeConns{up: 1000, down: 5000, conns: []proxy.ConnInfo{
		{ID: 7, Network: "tcp", Flow: stack.FlowID{Src: netip.MustParseAddrPort("198.18.0.1:40000"), Dst: netip.MustParseAddrPort("198.19.0.2:443")},
			Domain: "example.test", Outbound: "proxy", Rule: 2, Age: 90 * time.Second, Up: 100, Down: 2000, State: "ESTABLISHED"},
		{ID: 9, Network: "udp", Flow: stack.FlowID{Src: netip.MustParseAddrPort("[2001:2::1]:5000"), Dst: netip.MustParseAddrPort("[2001:2::53]:53")},
			Outbound: "dns", Rule: -1, Up: 40, Down: 80},
	}}
}

func newServer(t *testing.T, o api.Options) *httptest.Server {
	t.Helper()
	if o.Conns == nil {
		o.Conns = sample()
	}
	o.Now = func() time.Time { return wall }
	srv := httptest.NewServer(api.New(o))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestAuth_SecretIsRequiredEverywhere(t *testing.T) {
	srv := newServer(t, api.Options{Secret: "s3cret", Gatherer: prometheus.NewRegistry()})
	for _, path := range []string{"/connections", "/metrics", "/version", "/traffic", "/ui/"} {
		if r := do(t, "GET", srv.URL+path, ""); r.StatusCode != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s without a token: %d, want 401 with WWW-Authenticate", path, r.StatusCode)
		}
		if r := do(t, "GET", srv.URL+path, "s3cre"); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d, want 401", path, r.StatusCode)
		}
	}
	if r := do(t, "DELETE", srv.URL+"/connections", ""); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("DELETE without a token: %d, want 401", r.StatusCode)
	}
	if r := do(t, "GET", srv.URL+"/version", "s3cret"); r.StatusCode != http.StatusOK {
		t.Errorf("GET /version with the token: %d, want 200", r.StatusCode)
	}
	if r := do(t, "GET", srv.URL+"/ui/?token=s3cret", ""); r.StatusCode != http.StatusOK {
		t.Errorf("GET /ui/?token=: %d, want 200", r.StatusCode)
	}
}

func TestNoSecret_OnlyRequestsByAddressOrLocalhost(t *testing.T) {
	srv := newServer(t, api.Options{})
	for host, want := range map[string]int{
		"": http.StatusOK, "localhost:9090": http.StatusOK, "[::1]:9090": http.StatusOK,
		"rebound.example.test": http.StatusForbidden, "rebound.example.test:9090": http.StatusForbidden,
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/version", nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: %d, want %d", host, resp.StatusCode, want)
		}
	}
	// With a secret the token decides, whatever the name.
	sec := newServer(t, api.Options{Secret: "s"})
	req, _ := http.NewRequest("GET", sec.URL+"/version", nil)
	req.Host = "gateway.example.test"
	req.Header.Set("Authorization", "Bearer s")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("by name with the token: %d, want 200", resp.StatusCode)
	}
}

func TestSetSecret_TakesEffectAtOnce(t *testing.T) {
	h := api.New(api.Options{Secret: "old", Conns: sample()})
	srv := httptest.NewServer(h)
	defer srv.Close()
	h.SetSecret("new")
	if r := do(t, "GET", srv.URL+"/version", "old"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("old token after SetSecret: %d, want 401", r.StatusCode)
	}
	if r := do(t, "GET", srv.URL+"/version", "new"); r.StatusCode != http.StatusOK {
		t.Errorf("new token: %d, want 200", r.StatusCode)
	}
}

func TestConnections_ClashShape(t *testing.T) {
	srv := newServer(t, api.Options{})
	r := do(t, "GET", srv.URL+"/connections", "")
	var got map[string]any
	if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got["uploadTotal"] != 1000.0 || got["downloadTotal"] != 5000.0 {
		t.Errorf("totals %v/%v, want 1000/5000", got["uploadTotal"], got["downloadTotal"])
	}
	cs := got["connections"].([]any)
	if len(cs) != 2 {
		t.Fatalf("%d connections, want 2", len(cs))
	}
	c := cs[0].(map[string]any)
	md := c["metadata"].(map[string]any)
	want := map[string]any{"network": "tcp", "sourceIP": "198.18.0.1", "sourcePort": "40000",
		"destinationIP": "198.19.0.2", "destinationPort": "443", "host": "example.test"}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("metadata.%s = %v, want %v", k, md[k], v)
		}
	}
	if c["id"] != "7" || c["upload"] != 100.0 || c["download"] != 2000.0 || c["state"] != "ESTABLISHED" ||
		c["rule"] != "route.rules[2]" || c["start"] != "2026-12-07T11:58:30Z" {
		t.Errorf("connection = %v", c)
	}
	if ch := c["chains"].([]any); len(ch) != 1 || ch[0] != "proxy" {
		t.Errorf("chains %v, want [proxy]", ch)
	}
	u := cs[1].(map[string]any)
	if u["rule"] != "dns-hijack" || u["metadata"].(map[string]any)["destinationIP"] != "2001:2::53" {
		t.Errorf("udp connection = %v", u)
	}
	if st := got["states"].(map[string]any); st["ESTABLISHED"] != 1.0 || len(st) != 1 {
		t.Errorf("states %v, want one ESTABLISHED", st)
	}
}

func TestDeleteConnection(t *testing.T) {
	fc := sample()
	srv := newServer(t, api.Options{Conns: fc})
	if r := do(t, "DELETE", srv.URL+"/connections/7", ""); r.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE /connections/7: %d, want 204", r.StatusCode)
	}
	if r := do(t, "DELETE", srv.URL+"/connections/7", ""); r.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of a closed connection: %d, want 404", r.StatusCode)
	}
	if r := do(t, "DELETE", srv.URL+"/connections/x", ""); r.StatusCode != http.StatusBadRequest {
		t.Errorf("DELETE /connections/x: %d, want 400", r.StatusCode)
	}
	if len(fc.closed) != 1 || fc.closed[0] != 7 {
		t.Errorf("closed %v, want [7]", fc.closed)
	}
	if r := do(t, "DELETE", srv.URL+"/connections", ""); r.StatusCode != http.StatusNoContent || len(fc.Connections()) != 0 {
		t.Errorf("DELETE /connections: %d, %d left; want 204 and none", r.StatusCode, len(fc.Connections()))
	}
}

func TestTraffic_StreamsBytesPerSecond(t *testing.T) {
	fc := sample()
	clk := clock.NewManual(0)
	srv := newServer(t, api.Options{Conns: fc, Clock: clk})
	r := do(t, "GET", srv.URL+"/traffic", "")
	lines := bufio.NewScanner(r.Body)
	for _, step := range []struct{ up, down uint64 }{{300, 1200}, {0, 50}} {
		waitTimers(t, clk)
		fc.add(step.up, step.down)
		clk.Advance(time.Second)
		if !lines.Scan() {
			t.Fatalf("stream ended: %v", lines.Err())
		}
		var got map[string]uint64
		if err := json.Unmarshal(lines.Bytes(), &got); err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		if got["up"] != step.up || got["down"] != step.down {
			t.Errorf("traffic %s, want up %d down %d", lines.Text(), step.up, step.down)
		}
	}
}

func waitTimers(t *testing.T, clk *clock.Manual) {
	t.Helper()
	giveUp := time.Now().Add(5 * time.Second)
	for clk.Pending() == 0 {
		if time.Now().After(giveUp) {
			t.Fatal("the stream armed no timer")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTrace(t *testing.T) {
	srv := newServer(t, api.Options{Traces: func(id uint64) ([]string, bool) {
		if id == 7 {
			return []string{"app ──► gw  SYN", "app ◄── gw  SYN-ACK"}, true
		}
		return nil, false
	}})
	r := do(t, "GET", srv.URL+"/connections/7/trace", "")
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK || !strings.Contains(string(body), "SYN-ACK") {
		t.Errorf("trace of 7: %d %q", r.StatusCode, body)
	}
	if r := do(t, "GET", srv.URL+"/connections/8/trace", ""); r.StatusCode != http.StatusNotFound {
		t.Errorf("trace of 8: %d, want 404", r.StatusCode)
	}
}

func TestReload(t *testing.T) {
	if r := do(t, "PUT", newServer(t, api.Options{}).URL+"/configs/reload", ""); r.StatusCode != http.StatusNotImplemented {
		t.Errorf("reload without a reloader: %d, want 501", r.StatusCode)
	}
	ok := newServer(t, api.Options{Reload: func() (api.ReloadReport, error) {
		return api.ReloadReport{Applied: []string{"route.rules"}, RestartRequired: []string{"tun.mtu"}}, nil
	}})
	r := do(t, "PUT", ok.URL+"/configs/reload", "")
	var rep api.ReloadReport
	json.NewDecoder(r.Body).Decode(&rep)
	if r.StatusCode != http.StatusOK || len(rep.Applied) != 1 || rep.RestartRequired[0] != "tun.mtu" {
		t.Errorf("reload: %d %+v", r.StatusCode, rep)
	}
	bad := newServer(t, api.Options{Reload: func() (api.ReloadReport, error) {
		return api.ReloadReport{}, errors.New("tun.mtu: out of range\nlog.level: unknown")
	}})
	r = do(t, "PUT", bad.URL+"/configs/reload", "")
	var e struct{ Problems []string }
	json.NewDecoder(r.Body).Decode(&e)
	if r.StatusCode != http.StatusBadRequest || len(e.Problems) != 2 {
		t.Errorf("bad reload: %d %+v, want 400 with both problems", r.StatusCode, e)
	}
}

func TestMetricsAndUI(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "tungate_test_total", Help: "test"})
	c.Add(3)
	reg.MustRegister(c)
	srv := newServer(t, api.Options{Gatherer: reg, Version: "v9", Stack: "custom"})
	body, _ := io.ReadAll(do(t, "GET", srv.URL+"/metrics", "").Body)
	if !strings.Contains(string(body), "tungate_test_total 3") {
		t.Errorf("metrics:\n%s", body)
	}
	r := do(t, "GET", srv.URL+"/ui/", "")
	page, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(page), "/connections") {
		t.Errorf("ui: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	if strings.Contains(string(page), "http://") || strings.Contains(string(page), "https://") {
		t.Error("the page loads something from elsewhere")
	}
	var v map[string]any
	json.NewDecoder(do(t, "GET", srv.URL+"/version", "").Body).Decode(&v)
	if v["version"] != "v9" || v["stack"] != "custom" {
		t.Errorf("version %v", v)
	}
}

func TestListen_UnixSocketReplacesAStaleOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := api.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Listen(path); err == nil {
		t.Error("a second listener on a served socket succeeded")
	}
	ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	ln.Close() // as a killed run leaves it: the file stays
	ln2, err := api.Listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln2.Close()
}
