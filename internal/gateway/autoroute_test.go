package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/tungate/tungate/internal/config"
	"github.com/tungate/tungate/tun/autoroute"
)

func TestAutoRouteError_ConflictsNameTheirKey(t *testing.T) {
	cfg := config.Default()
	cfg.TUN.AutoRoute = true
	for field, key := range map[autoroute.Field]string{
		autoroute.FieldTable:    "tun.route_table",
		autoroute.FieldPriority: "tun.rule_priority",
		autoroute.FieldMark:     "tun.route_mark",
	} {
		err := autoRouteError(cfg, fmt.Errorf("wrapped: %w", &autoroute.ConflictError{Field: field, Msg: "in use"}))
		var ce *config.Error
		if !errors.As(err, &ce) || len(ce.Problems) != 1 || ce.Problems[0].Key != key {
			t.Errorf("field %d: %v, want one problem on %s", field, err, key)
		}
	}
	cfg.Upstream.Fwmark = 5
	err := autoRouteError(cfg, &autoroute.ConflictError{Field: autoroute.FieldMark, Msg: "in use"})
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Problems[0].Key != "upstream.fwmark" {
		t.Errorf("mark from upstream.fwmark: %v", err)
	}
	busy := fmt.Errorf("autoroute: table 2022 is %w (pid 1)", autoroute.ErrBusy)
	if err := autoRouteError(cfg, busy); !errors.As(err, &ce) || ce.Problems[0].Key != "tun.route_table" {
		t.Errorf("busy table: %v, want a problem on tun.route_table", err)
	}
	if err := autoRouteError(cfg, errors.New("netlink: boom")); errors.As(err, &ce) {
		t.Errorf("a plain failure became a config error: %v", err)
	}
}

func TestUpstreamAddrs_LiteralsAndDirect(t *testing.T) {
	ctx := context.Background()
	if a, err := UpstreamAddrs(ctx, config.Upstream{Kind: config.UpstreamDirect}); a != nil || err != nil {
		t.Errorf("direct: %v, %v", a, err)
	}
	a, err := UpstreamAddrs(ctx, config.Upstream{Kind: config.UpstreamSOCKS5, Address: "[::ffff:198.19.0.9]:1080"})
	if err != nil || !slices.Equal(a, []netip.Addr{netip.MustParseAddr("198.19.0.9")}) {
		t.Errorf("mapped literal: %v, %v", a, err)
	}
	a, err = UpstreamAddrs(ctx, config.Upstream{Kind: config.UpstreamHTTP, Address: "localhost:3128"})
	if err != nil || !slices.ContainsFunc(a, netip.Addr.IsLoopback) {
		t.Errorf("localhost: %v, %v", a, err)
	}
}
