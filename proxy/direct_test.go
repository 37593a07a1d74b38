package proxy_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/proxy"
)

func TestDirect_RefusalSatisfiesECONNREFUSED(t *testing.T) {
	d := proxy.NewDirect(proxy.DirectOptions{})
	_, err := d.DialContext(context.Background(), "tcp", closedPort(t))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial error %v, want ECONNREFUSED", err)
	}
}

func TestDirect_CancelledDialReportsCause(t *testing.T) {
	d := proxy.NewDirect(proxy.DirectOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
	defer cancel()
	_, err := d.DialContext(ctx, "tcp", listenTCP(t).Addr().String())
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dial error %v, want a deadline error", err)
	}
}

func TestDirect_UnknownInterfaceFailsDial(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: SO_BINDTODEVICE needs CAP_NET_RAW")
	}
	d := proxy.NewDirect(proxy.DirectOptions{BindInterface: "nosuchif0"})
	_, err := d.DialContext(context.Background(), "tcp", listenTCP(t).Addr().String())
	if !errors.Is(err, syscall.ENODEV) {
		t.Fatalf("dial error %v, want ENODEV", err)
	}
}
