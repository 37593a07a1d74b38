package api

import (
	_ "embed"
	"net/http"
)

// uiPage is the web view: one file, no build step, nothing fetched from
// elsewhere.
//
//go:embed ui/index.html
var uiPage []byte

func (h *Handler) ui(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/ui/" && r.URL.Path != "/ui/index.html" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// The page talks only to this API, so no other origin may run in it.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Write(uiPage)
}
