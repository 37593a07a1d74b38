package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/gateway"
)

func TestRoutePlan_PrintsTheDefaultPlanWithoutAutoRouteSet(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.run("route", "plan", "--config", exampleConfig); code != exitOK {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	out := p.stdout.String()
	for _, want := range []string{
		"SO_MARK 0x7467 (tun.route_mark)",
		"ip -4 rule add priority 7400 fwmark 0x7467 goto 7409 table 7467 protocol 116",
		"ip -6 rule add priority 7407 lookup 7467 protocol 116",
		"ip -4 route add 0.0.0.0/0 dev tungate0 table 7467 protocol 116",
		"ip -6 route add ::/0 dev tungate0 table 7467 protocol 116",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

func TestRoutePlan_FlagsAndUpstreamShapeThePlan(t *testing.T) {
	p := newFakeProcess(t)
	code := p.run("route", "plan", "--strict-route", "--exclude-uid", "1000-1999", "--route-exclude", "198.19.0.5/32",
		"--upstream", "socks5", "--upstream-address", "198.19.0.9:1080", "--fwmark", "7")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	out := p.stdout.String()
	for _, want := range []string{
		"SO_MARK 0x7 (upstream.fwmark)",
		"fwmark 0x7 goto 7409",
		"uidrange 1000-1999 goto 7409",
		"to 198.19.0.9/32 goto 7409",
		"to 198.19.0.5/32 goto 7409",
		"ipproto udp dport 53 lookup 7467",
		"ipproto tcp dport 53 lookup 7467",
		"route add unreachable 0.0.0.0/0 table 7467",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

func TestRoutePlan_OverlapIsAConfigError(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.run("route", "plan", "--route-include", "10.1.0.0/16"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	lines := stderrLines(p)
	if len(lines) != 1 || !strings.Contains(lines[0], "tun.route_include[0]") || !strings.Contains(lines[0], "tun.exclude_private") {
		t.Errorf("stderr %q, want one line naming tun.route_include[0] and tun.exclude_private", lines)
	}
}

func TestRun_HostConflictIsExitTwo(t *testing.T) {
	p := newFakeProcess(t)
	p.app.serve = func(context.Context, *config.Config, gateway.Options) error {
		return &config.Error{Problems: []config.Problem{{Key: "tun.rule_priority", Message: "priorities 7400–7409 are needed"}}}
	}
	if code := p.run("run", "--auto-route"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if lines := stderrLines(p); len(lines) != 1 || !strings.HasPrefix(lines[0], "gateway: tun.rule_priority: ") {
		t.Errorf("stderr %q, want one line naming tun.rule_priority", lines)
	}
}

func TestRun_AutoRouteFromFileReachesTheGateway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte("tun:\n  auto_route: true\n  exclude_uid: [\"1000-1999\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newFakeProcess(t)
	var got *config.Config
	p.app.serve = func(_ context.Context, c *config.Config, _ gateway.Options) error {
		got = c
		return nil
	}
	if code := p.run("run", "--config", path); code != exitOK {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	if got == nil || !got.TUN.AutoRoute || got.SocketMark() != config.DefaultRouteMark || len(got.TUN.ExcludeUID) != 1 {
		t.Errorf("gateway got %+v", got)
	}
}
