// Package api serves the gateway's HTTP API: Prometheus metrics, the
// connections API in the shape Clash dashboards speak, a live web view,
// and reload. It reads snapshots through small interfaces and never
// touches the engine's internals; the composition root
// (internal/gateway) wires it up.
package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/proxy"
)

// Conns is what the connections API reads and ends: the proxy.
type Conns interface {
	Connections() []proxy.ConnInfo
	CloseConnection(id uint64) bool
	CloseAllConnections() int
	// Totals are the payload bytes relayed since start, TCP and UDP,
	// app→upstream and upstream→app.
	Totals() (up, down uint64)
}

// Traces returns the ladder of connection id, one line per element, and
// whether it is kept.
type Traces func(id uint64) (lines []string, ok bool)

// ReloadReport is what a reload did.
type ReloadReport struct {
	// Applied are the changed keys now in force for new flows.
	Applied []string `json:"applied"`
	// RestartRequired are the changed keys that apply only after a
	// restart; they were left as they were.
	RestartRequired []string `json:"restart_required"`
}

// Reloader reads the configuration again and applies it; an error means
// nothing was applied (Problems lists why when it is a config error).
type Reloader func() (ReloadReport, error)

// Options configure a Handler.
type Options struct {
	// Secret, when set, is the bearer token every request needs; see
	// also SetSecret.
	Secret  string
	Version string
	// Stack is the stack kind, for /version.
	Stack string
	Conns Conns
	// Gatherer serves /metrics; nil answers 404.
	Gatherer prometheus.Gatherer
	// Traces serves /connections/{id}/trace; nil answers 404.
	Traces Traces
	// Reload serves PUT /configs/reload; nil answers 501.
	Reload Reloader
	// Clock paces /traffic; nil is the system's.
	Clock  clock.Clock
	Logger *slog.Logger
	// Now is the wall clock for the connections' start times; nil is
	// time.Now.
	Now func() time.Time
}

// Handler is the API's http.Handler.
type Handler struct {
	o   Options
	mux *http.ServeMux
	key atomic.Pointer[secret] // SetSecret replaces it
}

// secret is the token's hash, or none.
type secret struct {
	set bool
	sum [sha256.Size]byte
}

// New returns the API's handler.
func New(o Options) *Handler {
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Handler{o: o, mux: http.NewServeMux()}
	h.SetSecret(o.Secret)
	h.mux.HandleFunc("GET /connections", h.connections)
	h.mux.HandleFunc("DELETE /connections", h.closeAll)
	h.mux.HandleFunc("DELETE /connections/{id}", h.closeOne)
	h.mux.HandleFunc("GET /connections/{id}/trace", h.trace)
	h.mux.HandleFunc("GET /traffic", h.traffic)
	h.mux.HandleFunc("GET /version", h.version)
	h.mux.HandleFunc("PUT /configs/reload", h.reload)
	h.mux.HandleFunc("GET /ui/", h.ui)
	h.mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	if o.Gatherer != nil {
		h.mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
			ErrorLog: slogPrinter{o.Logger}, ErrorHandling: promhttp.ContinueOnError}))
	}
	return h
}

// SetSecret replaces the bearer token (a reload); "" requires none.
// Requests in flight are not affected.
func (h *Handler) SetSecret(s string) {
	h.key.Store(&secret{set: s != "", sum: sha256.Sum256([]byte(s))})
}

// ServeHTTP checks the token, then serves the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.key.Load().set && !literalHost(r) {
		// Without a secret only this machine reaches the API, but a web
		// page it opens could, by a name rebound to 127.0.0.1; such a
		// request names the host by that name.
		writeError(w, http.StatusForbidden, "without api.secret the API answers only requests to an IP address or localhost")
		return
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tungate"`)
		writeError(w, http.StatusUnauthorized, "a bearer token is required (Authorization: Bearer <api.secret>)")
		return
	}
	h.mux.ServeHTTP(w, r)
}

// literalHost reports whether r addresses the API by an IP address or
// localhost, or came over a unix socket (no TCP peer).
func literalHost(r *http.Request) bool {
	if _, err := netip.ParseAddrPort(r.RemoteAddr); err != nil {
		return true // a unix socket
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return host == "localhost"
}

// authorized compares the request's token with the secret in constant
// time (over their hashes, so neither the length leaks). The token comes
// from "Authorization: Bearer", or from ?token= for what a browser opens
// itself (the web view's first load).
func (h *Handler) authorized(r *http.Request) bool {
	key := h.key.Load()
	if !key.set {
		return true
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		tok = r.URL.Query().Get("token")
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], key.sum[:]) == 1
}

func (h *Handler) version(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"version": h.o.Version, "stack": h.o.Stack, "meta": false, "premium": false})
}

func (h *Handler) reload(w http.ResponseWriter, _ *http.Request) {
	if h.o.Reload == nil {
		writeError(w, http.StatusNotImplemented, "reload is not available")
		return
	}
	rep, err := h.o.Reload()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"message": "the configuration was not applied; the old one keeps serving",
			"problems": strings.Split(err.Error(), "\n")})
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"message": msg})
}

// slogPrinter adapts the logger to promhttp's error log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("api: metrics", "err", fmt.Sprint(v...)) }

// Listen opens the API's listener: a TCP address, or a unix socket when
// addr holds a "/" (a stale socket file left by a killed run is removed
// first; the new one is 0660, for the owner and its group).
func Listen(addr string) (net.Listener, error) {
	if !strings.Contains(addr, "/") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("api: listen %s: %w", addr, err)
		}
		return ln, nil
	}
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", addr); err == nil {
			c.Close()
			return nil, fmt.Errorf("api: listen %s: another process serves it", addr)
		}
		os.Remove(addr)
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", addr, err)
	}
	if err := os.Chmod(addr, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api: listen %s: %w", addr, err)
	}
	return ln, nil
}

// Server serves a Handler on a listener until Close.
type Server struct {
	srv  *http.Server
	done chan error
}

// Serve starts serving h on ln.
func Serve(ln net.Listener, h http.Handler, log *slog.Logger) *Server {
	s := &Server{
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s
}

// Close stops the server: the listener at once, open requests (a
// /traffic stream) cut off. It waits for the serving goroutine.
func (s *Server) Close() error {
	err := s.srv.Close()
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
