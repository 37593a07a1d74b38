package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tungate/tungate/internal/netlab"
)

// The operations tests: the API, reload and the web view on a real
// gateway. Every test has namespaces of its own, so the ports are fixed.
const (
	apiAddr      = "127.0.0.1:9090" // in the client namespace
	apiSecret    = "e2e-secret"
	downloadPort = "8101"
	otherPort    = "8102"
	downloadSize = 32 << 20
)

// opsConfig is the gateway's config file: the API with a secret, and
// extra YAML (rules) after it.
func opsConfig(t *testing.T, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeOpsConfig(t, path, extra)
	return path
}

func writeOpsConfig(t *testing.T, path, extra string) {
	t.Helper()
	cfg := fmt.Sprintf("api:\n  listen: %s\n  secret: %s\n%s", apiAddr, apiSecret, extra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// opsAPI calls the gateway's API from the client namespace.
type opsAPI struct {
	t *testing.T
	c *http.Client
}

func newOpsAPI(t *testing.T, e *env) *opsAPI {
	t.Helper()
	tr := &http.Transport{DialContext: e.lab.Client().DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	a := &opsAPI{t: t, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	giveUp := time.Now().Add(10 * time.Second)
	for {
		if code, _, err := a.call("GET", "/version", apiSecret); err == nil && code == http.StatusOK {
			return a
		}
		if time.Now().After(giveUp) {
			t.Fatalf("the API never answered on %s\n%s", apiAddr, tail(e.logs(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *opsAPI) call(method, path, token string) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+apiAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (a *opsAPI) must(method, path string, want int) []byte {
	a.t.Helper()
	code, b, err := a.call(method, path, apiSecret)
	if err != nil || code != want {
		a.t.Fatalf("%s %s: %d %v %s; want %d", method, path, code, err, b, want)
	}
	return b
}

// connTo waits for the API to list a TCP connection to port and returns
// its id.
func (a *opsAPI) connTo(port string) string {
	a.t.Helper()
	giveUp := time.Now().Add(10 * time.Second)
	for {
		var rep struct {
			Connections []struct {
				ID       string
				State    string
				Metadata struct{ DestinationPort string }
			}
		}
		if err := json.Unmarshal(a.must("GET", "/connections", http.StatusOK), &rep); err != nil {
			a.t.Fatal(err)
		}
		for _, c := range rep.Connections {
			if c.Metadata.DestinationPort == port && c.State == "ESTABLISHED" {
				return c.ID
			}
		}
		if time.Now().After(giveUp) {
			a.t.Fatalf("no established connection to port %s in %+v", port, rep)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serveStream sends each connection n bytes of a seeded stream (n < 0:
// without end) and closes.
func serveStream(n int64) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		src := io.Reader(rand.NewChaCha8([32]byte{7}))
		if n >= 0 {
			src = io.LimitReader(src, n)
		}
		_, _ = io.Copy(c, src)
	}
}

// streamSum is the SHA-256 of the first n bytes serveStream sends.
func streamSum(n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(rand.NewChaCha8([32]byte{7}), n))
	return [32]byte(h.Sum(nil))
}

func TestOps_DeleteConnectionResetsARunningDownload(t *testing.T) {
	for _, kind := range []string{"custom", "gvisor"} {
		t.Run(kind, func(t *testing.T) {
			e := startGateway(t, kind, "--config", opsConfig(t, ""))
			a := newOpsAPI(t, e)
			if code, _, _ := a.call("GET", "/connections", ""); code != http.StatusUnauthorized {
				t.Errorf("GET /connections without the token: %d, want 401", code)
			}
			if code, _, _ := a.call("GET", "/metrics", "wrong"); code != http.StatusUnauthorized {
				t.Errorf("GET /metrics with a wrong token: %d, want 401", code)
			}
			e.listen(t, net.JoinHostPort(netlab.ServerAddr4, downloadPort), serveStream(-1))
			c, err := e.dial(context.Background(), net.JoinHostPort(netlab.ServerAddr4, downloadPort))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.CopyN(io.Discard, c, 1<<20); err != nil {
				t.Fatalf("download: %v", err)
			}
			id := a.connTo(downloadPort)
			a.must("DELETE", "/connections/"+id, http.StatusNoContent)
			_, err = readAllTimeout(c, 10*time.Second)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the download after DELETE ended with %v, want ECONNRESET", err)
			}
		})
	}
}

func TestOps_HangupAddsARuleWhileADownloadRunsIntact(t *testing.T) {
	for _, kind := range []string{"custom", "gvisor"} {
		t.Run(kind, func(t *testing.T) {
			path := opsConfig(t, "")
			e := startGateway(t, kind, "--config", path)
			a := newOpsAPI(t, e)
			e.listen(t, net.JoinHostPort(netlab.ServerAddr4, downloadPort), serveStream(downloadSize))
			e.listen(t, net.JoinHostPort(netlab.ServerAddr4, otherPort), func(c *net.TCPConn) { _, _ = io.Copy(c, c) })
			other := net.JoinHostPort(netlab.ServerAddr4, otherPort)
			if c, err := e.dial(context.Background(), other); err != nil {
				t.Fatalf("before the reload: %v", err)
			} else {
				c.Close()
			}

			dl, err := e.dial(context.Background(), net.JoinHostPort(netlab.ServerAddr4, downloadPort))
			if err != nil {
				t.Fatal(err)
			}
			defer dl.Close()
			h := sha256.New()
			if _, err := io.CopyN(h, dl, 2<<20); err != nil {
				t.Fatalf("download start: %v", err)
			}

			writeOpsConfig(t, path, fmt.Sprintf("route:\n  rules:\n    - port: [%s]\n      outbound: reject\n", otherPort))
			if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			giveUp := time.Now().Add(10 * time.Second)
			for !strings.Contains(e.logs(), "config reloaded") {
				if time.Now().After(giveUp) {
					t.Fatalf("no reload after SIGHUP:\n%s", tail(e.logs(), 20))
				}
				time.Sleep(10 * time.Millisecond)
			}
			_, err = e.dial(context.Background(), other)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("a new connect to the rejected port: %v, want ECONNREFUSED", err)
			}

			// The running download goes on, slowly, and arrives whole.
			buf := make([]byte, 256<<10)
			for {
				dl.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := dl.Read(buf)
				h.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("download after the reload: %v", err)
				}
				time.Sleep(time.Millisecond)
			}
			if got := [32]byte(h.Sum(nil)); got != streamSum(downloadSize) {
				t.Fatal("the download's SHA-256 differs from what the server sent")
			}
			var rep struct {
				Applied []string `json:"applied"`
			}
			body := a.must("PUT", "/configs/reload", http.StatusOK)
			if err := json.Unmarshal(body, &rep); err != nil || len(rep.Applied) != 0 {
				t.Errorf("a second reload of the same file: %s, want nothing applied", body)
			}
		})
	}
}

func TestOps_MetricsParseAndPassPromtool(t *testing.T) {
	e := startGateway(t, "custom", "--config", opsConfig(t, ""))
	a := newOpsAPI(t, e)
	addr := e.listen(t, net.JoinHostPort(netlab.ServerAddr4, downloadPort), serveStream(1<<20))
	c, err := e.dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := readAllTimeout(c, 10*time.Second); err != nil || len(b) != 1<<20 {
		t.Fatalf("download: %d bytes, %v", len(b), err)
	}
	c.Close()
	body := a.must("GET", "/metrics", http.StatusOK)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, name := range []string{"tungate_tcp_connections", "tungate_tcp_connections_opened_total",
		"tungate_tcp_syn_cookies_sent_total", "tungate_tcp_challenge_acks_total", "tungate_tcp_retransmits_total",
		"tungate_relayed_bytes_total", "tungate_dial_duration_seconds", "tungate_rule_hits_total",
		"tungate_tun_packets_total", "tungate_udp_sessions", "process_open_fds", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("/metrics has no %s", name)
		}
	}
	var down float64
	for _, m := range fams["tungate_relayed_bytes_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["network"] == "tcp" && labels["direction"] == "down" {
			down = m.GetCounter().GetValue()
		}
	}
	if down < 1<<20 {
		t.Errorf("tungate_relayed_bytes_total{tcp,down} = %v, want the 1 MiB downloaded", down)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: prometheus); the text parser accepted the output")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestOps_WebViewShowsALiveConnection(t *testing.T) {
	chromium := needTool(t, "chromium", "chromium")
	e := startGateway(t, "custom", "--config", opsConfig(t, ""))
	a := newOpsAPI(t, e)
	addr := e.listen(t, net.JoinHostPort(netlab.ServerAddr4, downloadPort), func(c *net.TCPConn) {
		_, _ = io.Copy(io.Discard, c) // held open until the client closes
	})
	c, err := e.dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "hello")

	id := a.connTo(downloadPort)
	url := "http://" + apiAddr + "/ui/?token=" + apiSecret + "#trace=" + id
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// No name lookups and no background fetches: the browser talks to
		// the API on loopback and nowhere else.
		args = append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--disable-default-apps", "--no-default-browser-check", "--dns-prefetch-disable",
			"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
			"--user-data-dir=" + t.TempDir(), "--window-size=1400,900", "--virtual-time-budget=4000"}, args...)
		cmd := e.lab.Client().Command(ctx, chromium, append(args, url)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium: %v\n%s", err, tail(stderr.String(), 20))
		}
		return out
	}
	dom := string(run("--dump-dom"))
	row := fmt.Sprintf("%s:%s</td>", netlab.ServerAddr4, downloadPort)
	if !strings.Contains(dom, row) || !strings.Contains(dom, "ESTABLISHED") {
		t.Fatalf("the page has no row for the live connection to %s:\n%s", addr, dom)
	}
	if !strings.Contains(dom, "SYN held while the handler decides") || !strings.Contains(dom, "→ ESTABLISHED") {
		t.Errorf("the page does not show the connection's ladder:\n%s", dom)
	}
	if !strings.Contains(dom, `id="status" class="muted">live</span>`) {
		t.Fatalf("the page's status is not live:\n%s", dom)
	}
	shot := filepath.Join(artifactDir(t), "ui.png")
	run("--screenshot=" + shot)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10<<10 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("web view screenshot: %s", shot)
}

// artifactDir is where tests keep what a person may want to look at
// afterwards: $TUNGATE_ARTIFACTS, else .artifacts at the repository's
// top.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TUNGATE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", ".artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func TestOps_BusyAPIPortFailsTheStartBeforeTheTUN(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and a TUN device")
	}
	lab, err := netlab.New(netlab.Options{})
	if err != nil {
		t.Fatalf("netlab: %v", err)
	}
	t.Cleanup(func() { lab.Close() })
	busy, err := lab.Client().Listen("tcp", apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p := runGateway(t, lab, nil, "--tun-name", tunName, "--config", opsConfig(t, ""))
	if err := p.wait(15 * time.Second); err == nil || p.exitCode() != 1 {
		t.Fatalf("gateway with its API port taken: exit %d (%v), want 1", p.exitCode(), err)
	}
	if out := p.out.String(); !strings.Contains(out, "api.listen") || !strings.Contains(out, "address already in use") {
		t.Errorf("the error does not say which key and why:\n%s", out)
	}
	if strings.Contains(p.out.String(), `msg="gateway up"`) {
		t.Error("the TUN came up before the API's port was found taken")
	}
	if _, err := lab.Client().Netlink().LinkByName(tunName); err == nil {
		t.Error("the TUN is left behind")
	}
}
