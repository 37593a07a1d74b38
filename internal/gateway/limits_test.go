package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tungate/tungate/internal/config"
)

func TestMaxConnections_DerivedFromTheOpenFileLimitAndLogged(t *testing.T) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	if got, want := maxConnections(config.Proxy{}, log), (config.Proxy{}).MaxConnectionsFor(rl.Cur); got != want || got <= 0 {
		t.Fatalf("derived limit %d, want %d", got, want)
	}
	if !strings.Contains(out.String(), "max_connections=") {
		t.Errorf("no start line saying the limit: %q", out.String())
	}
	out.Reset()
	if got := maxConnections(config.Proxy{MaxConnections: int(rl.Cur) + 1}, log); got != int(rl.Cur)+1 {
		t.Fatalf("explicit limit %d, want it as set", got)
	}
	if !strings.Contains(out.String(), "EMFILE") {
		t.Errorf("a limit above RLIMIT_NOFILE is not warned about: %q", out.String())
	}
	if got := maxConnections(config.Proxy{MaxConnections: -1}, log); got != 0 {
		t.Fatalf("-1 gives %d, want 0 (no limit)", got)
	}
}
