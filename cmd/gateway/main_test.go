package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/gateway"
)

const exampleConfig = "../../configs/gateway.yaml"

// syncBuffer is a bytes.Buffer safe for the signal goroutine and the test
// to use at once.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeProcess stands in for the process: an empty environment unless set,
// a gateway that must not run unless replaced, signals the test delivers
// by hand, and an exit that records its status.
type fakeProcess struct {
	stdout, stderr syncBuffer
	app            *app

	mu       sync.Mutex // guards sigs, stopped, exitCode
	sigs     chan<- os.Signal
	stopped  bool
	exitCode int
	exited   chan struct{}
}

func newFakeProcess(t *testing.T) *fakeProcess {
	t.Helper()
	p := &fakeProcess{exitCode: -1, exited: make(chan struct{})}
	p.app = &app{
		stdout:  &p.stdout,
		stderr:  &p.stderr,
		environ: []string{},
		serve: func(context.Context, *config.Config, gateway.Options) error {
			t.Error("the gateway was started")
			return nil
		},
		notify: func(c chan<- os.Signal) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.sigs = c
		},
		stopNotify: func(chan<- os.Signal) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.stopped = true
		},
		exit: func(code int) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.exitCode = code
			close(p.exited)
		},
	}
	return p
}

func (p *fakeProcess) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	p.mu.Lock()
	c := p.sigs
	p.mu.Unlock()
	if c == nil {
		t.Fatal("no signal handler installed")
	}
	c <- sig
}

func (p *fakeProcess) run(args ...string) int { return p.app.execute(args) }

func stderrLines(p *fakeProcess) []string {
	return strings.Split(strings.TrimSuffix(p.stderr.String(), "\n"), "\n")
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigCheck_ValidFilePrintsOK(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.run("config", "check", "--config", exampleConfig); code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, p.stderr.String())
	}
	if p.stdout.String() != "config OK\n" || p.stderr.String() != "" {
		t.Fatalf("stdout %q, stderr %q", p.stdout.String(), p.stderr.String())
	}
}

func TestConfigCheck_InvalidFilePrintsEveryProblemAndExits2(t *testing.T) {
	path := writeFile(t, "tun:\n  mtu: 70000\nstack:\n  gvisr:\n    sack: false\nupstream:\n  kind: socks5\n")
	p := newFakeProcess(t)
	if code := p.run("config", "check", "--config", path); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	want := []string{
		"gateway: stack.gvisr.sack: unknown key; did you mean stack.gvisor.sack? (from " + path + ")",
		"gateway: tun.mtu: 70000 is out of range [576, 65535] (from " + path + ")",
		"gateway: upstream.address: is required when upstream.kind is socks5 (host:port of the proxy)",
	}
	if got := stderrLines(p); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.stdout.String() != "" {
		t.Fatalf("stdout %q, want nothing", p.stdout.String())
	}
}

func TestConfigCheck_ChecksTheEnvironment(t *testing.T) {
	p := newFakeProcess(t)
	p.app.environ = []string{"TUNGATE_STACK_KINDD=custom"}
	if code := p.run("config", "check"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if got := stderrLines(p); len(got) != 1 || !strings.HasPrefix(got[0], "gateway: TUNGATE_STACK_KINDD: unknown environment variable") {
		t.Fatalf("stderr %q", got)
	}
}

func TestConfigCheck_MissingFileExits2(t *testing.T) {
	p := newFakeProcess(t)
	path := filepath.Join(t.TempDir(), "absent.yaml")
	if code := p.run("config", "check", "--config", path); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if got := stderrLines(p); len(got) != 1 || !strings.Contains(got[0], "no such file") || !strings.HasPrefix(got[0], "gateway: config: ") {
		t.Fatalf("stderr %q", got)
	}
}

func TestConfigCheck_PrintWritesEffectiveConfigThatLoadsBack(t *testing.T) {
	p := newFakeProcess(t)
	p.app.environ = []string{"TUNGATE_TUN_MTU=1400", "TUNGATE_LOG_FORMAT=json"}
	if code := p.run("config", "check", "--print"); code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, p.stderr.String())
	}
	if p.stderr.String() != "config OK\n" {
		t.Fatalf("stderr %q, want config OK", p.stderr.String())
	}
	cfg, err := config.Load(config.LoadOptions{File: writeFile(t, p.stdout.String()), Environ: []string{}})
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, p.stdout.String())
	}
	if cfg.TUN.MTU != 1400 || cfg.Log.Format != config.LogJSON {
		t.Fatalf("printed config lost the environment's values:\n%s", p.stdout.String())
	}
}

func TestVersion_PrintsVersionAndGoVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "gateway "+version+"\n") || !strings.Contains(out, runtime.Version()) {
		t.Fatalf("version output:\n%s", out)
	}
}

func TestVersionText_ShowsModuleAndRevision(t *testing.T) {
	info := &debug.BuildInfo{
		Main: debug.Module{Path: "github.com/tungate/tungate", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := versionText("v1.2.3", info)
	for _, want := range []string{"gateway v1.2.3\n", "module: github.com/tungate/tungate v1.2.3\n", "revision: abc123 (modified)"} {
		if !strings.Contains(got, want) {
			t.Errorf("versionText missing %q:\n%s", want, got)
		}
	}
	if got := versionText("dev", nil); !strings.HasPrefix(got, "gateway dev\ngo: ") {
		t.Errorf("versionText without build info:\n%s", got)
	}
}

func TestRun_InvalidConfigExits2WithoutStartingTheGateway(t *testing.T) {
	p := newFakeProcess(t)
	p.app.environ = []string{"TUNGATE_LOG_LEVEL=loud"}
	if code := p.run("run", "--mtu", "70000"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	want := []string{
		"gateway: tun.mtu: 70000 is out of range [576, 65535] (from --mtu)",
		`gateway: log.level: "loud" is not one of debug, info, warn, error (from TUNGATE_LOG_LEVEL)`,
	}
	if got := stderrLines(p); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stderr:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.sigs != nil {
		t.Fatal("signal handling was installed for a config that never ran")
	}
}

func TestRun_PassesConfigAndOptionsToTheGateway(t *testing.T) {
	p := newFakeProcess(t)
	path := writeFile(t, "tun:\n  mtu: 9000\n")
	p.app.environ = []string{"TUNGATE_TUN_NAME=tg-env"}
	var gotCfg *config.Config
	var gotOpts gateway.Options
	p.app.serve = func(_ context.Context, cfg *config.Config, opts gateway.Options) error {
		gotCfg, gotOpts = cfg, opts
		return nil
	}
	code := p.run("run", "--config", path, "--stack", "custom", "--pcap", "/tmp/x.pcap", "--trace", "198.19.0.2:80", "--faults", "loss=0.01,seed=3")
	if code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, p.stderr.String())
	}
	if gotCfg.TUN.MTU != 9000 || gotCfg.TUN.Name != "tg-env" || gotCfg.Stack.Kind != config.StackCustom {
		t.Fatalf("config: mtu %d, name %q, stack %q", gotCfg.TUN.MTU, gotCfg.TUN.Name, gotCfg.Stack.Kind)
	}
	if gotOpts.PcapPath != "/tmp/x.pcap" || gotOpts.Trace != "198.19.0.2:80" || gotOpts.Faults != "loss=0.01,seed=3" || gotOpts.Logger == nil {
		t.Fatalf("options %+v", gotOpts)
	}
	if !p.stopped {
		t.Fatal("signal handling was not stopped after the gateway returned")
	}
}

func TestRun_LoggerFollowsLogConfig(t *testing.T) {
	p := newFakeProcess(t)
	p.app.serve = func(_ context.Context, _ *config.Config, opts gateway.Options) error {
		opts.Logger.Debug("probe", "k", 1)
		return nil
	}
	if code := p.run("run", "--log-format=json", "--log-level=debug"); code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, p.stderr.String())
	}
	if got := p.stderr.String(); !strings.Contains(got, `"msg":"probe"`) || !strings.Contains(got, `"level":"DEBUG"`) {
		t.Fatalf("stderr %q, want a JSON debug record", got)
	}

	p = newFakeProcess(t)
	p.app.serve = func(_ context.Context, _ *config.Config, opts gateway.Options) error {
		opts.Logger.Debug("hidden")
		opts.Logger.Warn("shown")
		return nil
	}
	if code := p.run("run", "--log-level=warn"); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if got := p.stderr.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "level=WARN msg=shown") {
		t.Fatalf("stderr %q, want only the text warn record", got)
	}
}

func TestRun_GatewayErrorExits1WithOneLine(t *testing.T) {
	p := newFakeProcess(t)
	p.app.serve = func(context.Context, *config.Config, gateway.Options) error {
		return errors.New("tun: open \"tungate0\": operation not permitted")
	}
	if code := p.run("run"); code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	if got := p.stderr.String(); got != "gateway: tun: open \"tungate0\": operation not permitted\n" {
		t.Fatalf("stderr %q", got)
	}
}

func TestRun_ErrorAlreadyPrefixedIsNotPrefixedTwice(t *testing.T) {
	p := newFakeProcess(t)
	p.app.serve = func(context.Context, *config.Config, gateway.Options) error {
		return errors.New("gateway: not implemented")
	}
	p.run("run")
	if got := p.stderr.String(); got != "gateway: not implemented\n" {
		t.Fatalf("stderr %q", got)
	}
}

func TestRun_FlagErrorExits2WithUsage(t *testing.T) {
	for _, args := range [][]string{{"run", "--mtu", "big"}, {"run", "--no-such-flag"}, {"run", "extra"}} {
		p := newFakeProcess(t)
		if code := p.run(args...); code != exitUsage {
			t.Fatalf("%q: exit %d, want %d", args, code, exitUsage)
		}
		got := p.stderr.String()
		if !strings.HasPrefix(got, "gateway: ") || !strings.Contains(got, "Usage:\n  gateway run") {
			t.Fatalf("%q: stderr %q, want the error then run's usage", args, got)
		}
	}
}

func TestRoot_UnknownCommandSuggestsAndExits2(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.run("rn"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if first := stderrLines(p)[0]; first != `gateway: unknown command "rn" for "gateway"; did you mean "run"?` {
		t.Fatalf("stderr first line %q", first)
	}
	p = newFakeProcess(t)
	if code := p.run("config", "chek"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	if first := stderrLines(p)[0]; !strings.Contains(first, `did you mean "check"?`) {
		t.Fatalf("stderr first line %q", first)
	}
}

func TestRoot_HelpExits0(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.run(); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(p.stdout.String(), "Exit status: 0 on success, 1 on a runtime error, 2 on a usage or") {
		t.Fatalf("help output:\n%s", p.stdout.String())
	}
}

// startRun runs "gateway run" in a goroutine with a gateway that reports
// its start and then behaves as serve says; it returns the exit status
// channel.
func startRun(t *testing.T, p *fakeProcess, serve func(ctx context.Context) error) <-chan int {
	t.Helper()
	started := make(chan struct{})
	p.app.serve = func(ctx context.Context, _ *config.Config, _ gateway.Options) error {
		close(started)
		return serve(ctx)
	}
	code := make(chan int, 1)
	go func() { code <- p.run("run") }()
	select {
	case <-started:
	case c := <-code:
		t.Fatalf("run exited %d before starting the gateway: %s", c, p.stderr.String())
	}
	return code
}

func TestRun_SignalCancelsTheGatewayAndExits0(t *testing.T) {
	p := newFakeProcess(t)
	code := startRun(t, p, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	p.signal(t, syscall.SIGTERM)
	if c := <-code; c != exitOK {
		t.Fatalf("exit %d, want %d; stderr:\n%s", c, exitOK, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "shutting down") {
		t.Fatalf("stderr %q, want the shutdown log line", p.stderr.String())
	}
	if p.exitCode != -1 {
		t.Fatalf("exit called with %d on a single signal", p.exitCode)
	}
}

func TestRun_SecondSignalExitsAtOnce(t *testing.T) {
	p := newFakeProcess(t)
	release := make(chan struct{})
	code := startRun(t, p, func(context.Context) error {
		<-release // a shutdown that hangs
		return nil
	})
	p.signal(t, os.Interrupt)
	p.signal(t, os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("second signal did not exit")
	}
	close(release)
	<-code
	if p.exitCode != exitFailure {
		t.Fatalf("exit(%d), want exit(%d)", p.exitCode, exitFailure)
	}
	if !strings.Contains(p.stderr.String(), "gateway: second signal (interrupt), exiting without a clean shutdown") {
		t.Fatalf("stderr %q", p.stderr.String())
	}
}
