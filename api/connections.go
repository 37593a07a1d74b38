package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tungate/tungate/proxy"
)

// connectionsReply is GET /connections, in the shape of Clash's API.
type connectionsReply struct {
	DownloadTotal uint64       `json:"downloadTotal"`
	UploadTotal   uint64       `json:"uploadTotal"`
	Connections   []connection `json:"connections"`
	// States counts the TCP connections by state (ours, not Clash's).
	States map[string]int `json:"states"`
}

type connection struct {
	ID       string    `json:"id"`
	Metadata metadata  `json:"metadata"`
	Upload   uint64    `json:"upload"`
	Download uint64    `json:"download"`
	Start    time.Time `json:"start"`
	// Chains are the outbounds the flow leaves through, the last hop
	// first as in Clash: one, here.
	Chains      []string `json:"chains"`
	Rule        string   `json:"rule"`
	RulePayload string   `json:"rulePayload"`
	// State is the app side's TCP state; "" for UDP.
	State string `json:"state"`
}

// metadata has Clash's field names; ports are strings there too.
type metadata struct {
	Network         string `json:"network"`
	Type            string `json:"type"`
	SourceIP        string `json:"sourceIP"`
	SourcePort      string `json:"sourcePort"`
	DestinationIP   string `json:"destinationIP"`
	DestinationPort string `json:"destinationPort"`
	Host            string `json:"host"`
}

func (h *Handler) connections(w http.ResponseWriter, _ *http.Request) {
	cs := h.o.Conns.Connections()
	up, down := h.o.Conns.Totals()
	rep := connectionsReply{UploadTotal: up, DownloadTotal: down, Connections: make([]connection, len(cs)),
		States: map[string]int{}}
	now := h.o.Now()
	for i, c := range cs {
		rep.Connections[i] = toConnection(c, now)
		if c.State != "" {
			rep.States[c.State]++
		}
	}
	writeJSON(w, http.StatusOK, rep)
}

func toConnection(c proxy.ConnInfo, now time.Time) connection {
	rule := "final"
	switch {
	case c.Outbound == "dns":
		rule = "dns-hijack"
	case c.Rule >= 0:
		rule = fmt.Sprintf("route.rules[%d]", c.Rule)
	}
	return connection{
		ID: strconv.FormatUint(c.ID, 10),
		Metadata: metadata{
			Network: c.Network, Type: "Tun",
			SourceIP: c.Flow.Src.Addr().Unmap().String(), SourcePort: strconv.Itoa(int(c.Flow.Src.Port())),
			DestinationIP: c.Flow.Dst.Addr().Unmap().String(), DestinationPort: strconv.Itoa(int(c.Flow.Dst.Port())),
			Host: c.Domain,
		},
		Upload: c.Up, Download: c.Down,
		Start:  now.Add(-c.Age).UTC().Truncate(time.Millisecond),
		Chains: []string{c.Outbound}, Rule: rule, State: c.State,
	}
}

func (h *Handler) closeOne(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("connection id %q is not a number", r.PathValue("id")))
		return
	}
	if !h.o.Conns.CloseConnection(id) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no open connection %d", id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) closeAll(w http.ResponseWriter, _ *http.Request) {
	n := h.o.Conns.CloseAllConnections()
	h.o.Logger.Info("api: closed every connection", "connections", n)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) trace(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("connection id %q is not a number", r.PathValue("id")))
		return
	}
	var lines []string
	ok := false
	if h.o.Traces != nil {
		lines, ok = h.o.Traces(id)
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no ladder kept for connection %d (api.trace_buffer keeps the last closed ones)", id))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(strings.Join(lines, "\n") + "\n"))
}

// traffic streams one JSON line per second, {"up":B,"down":B} in bytes
// per second over that second, as Clash's /traffic does, until the
// client goes away.
func (h *Handler) traffic(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	tick := make(chan struct{}, 1)
	arm := func() {
		h.o.Clock.AfterFunc(time.Second, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
	}
	lastUp, lastDown := h.o.Conns.Totals()
	last := h.o.Clock.Now()
	enc := json.NewEncoder(w)
	for {
		arm()
		select {
		case <-r.Context().Done():
			return
		case <-tick:
		}
		up, down := h.o.Conns.Totals()
		now := h.o.Clock.Now()
		secs := now.Sub(last).Seconds()
		if secs <= 0 {
			secs = 1
		}
		if err := enc.Encode(map[string]uint64{
			"up":   uint64(float64(up-lastUp) / secs),
			"down": uint64(float64(down-lastDown) / secs),
		}); err != nil {
			return
		}
		fl.Flush()
		lastUp, lastDown, last = up, down, now
	}
}
