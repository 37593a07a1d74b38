package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/internal/gateway"
)

func TestRun_HangupReloadsTheFileWithTheFlagsStillOnTop(t *testing.T) {
	p := newFakeProcess(t)
	var hup chan<- os.Signal
	hupSet := make(chan struct{})
	p.app.notifyReload = func(c chan<- os.Signal) { hup = c; close(hupSet) }
	path := writeFile(t, "proxy:\n  idle_timeout: 1m\n")
	got := make(chan *config.Config, 1)
	p.app.serve = func(ctx context.Context, _ *config.Config, opts gateway.Options) error {
		<-opts.Reload
		cfg, err := opts.Load()
		if err != nil {
			t.Error(err)
		}
		got <- cfg
		return nil
	}
	code := make(chan int, 1)
	go func() { code <- p.run("run", "--config", path, "--mtu", "1400") }()
	<-hupSet
	if err := os.WriteFile(path, []byte("proxy:\n  idle_timeout: 2m\ntun:\n  mtu: 9000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	select {
	case cfg := <-got:
		if cfg.Proxy.IdleTimeout != 2*time.Minute || cfg.TUN.MTU != 1400 {
			t.Errorf("reloaded idle_timeout %v mtu %d, want the file's 2m and the flag's 1400", cfg.Proxy.IdleTimeout, cfg.TUN.MTU)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not reach the gateway as a reload")
	}
	if c := <-code; c != exitOK {
		t.Fatalf("exit %d: %s", c, p.stderr.String())
	}
}

func TestRun_TellsSystemdWhenReadyAndStopping(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := newFakeProcess(t)
	p.app.environ = []string{"NOTIFY_SOCKET=" + sock}
	p.app.serve = func(_ context.Context, _ *config.Config, opts gateway.Options) error {
		opts.Ready()
		return nil
	}
	if code := p.run("run"); code != exitOK {
		t.Fatalf("exit %d: %s", code, p.stderr.String())
	}
	for _, want := range []string{"READY=1", "STOPPING=1"} {
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := ln.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("notify socket got %q, %v; want %q", buf[:n], err, want)
		}
	}
}
