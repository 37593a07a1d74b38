//go:build linux

package autoroute

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Session is an installed plan with its table's lock held: the capture of
// one running gateway. Close ends it.
type Session struct {
	h    *netlink.Handle
	in   *Installed
	lock *Lock
	log  *slog.Logger
}

// NewHandle opens a netlink socket in the calling thread's network
// namespace, for Start and CleanupStale.
func NewHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("autoroute: netlink: %w", err)
	}
	return h, nil
}

// Start installs p, routing into the TUN with index tunIndex, in the
// calling thread's network namespace. In order: it takes the table's lock
// (failing with ErrBusy when a running gateway holds it), checks that the
// host's rules leave room for p (a *ConflictError otherwise, with nothing
// changed), removes what a killed earlier run of the same table left
// behind, and installs p. On any failure nothing of p remains.
func Start(p *Plan, tunIndex int, mark uint32, log *slog.Logger) (*Session, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock, err := Acquire(p.Table)
	if err != nil {
		return nil, err
	}
	h, err := NewHandle()
	if err != nil {
		return nil, errors.Join(err, lock.Release())
	}
	s := &Session{h: h, lock: lock, log: log}
	fail := func(err error) (*Session, error) {
		return nil, errors.Join(err, s.Close())
	}
	if err := Check(h, p, mark); err != nil {
		return fail(err)
	}
	n, err := Cleanup(h, p.Table, p.Priority)
	if err != nil {
		return fail(err)
	}
	if n > 0 {
		log.Warn("auto-route: removed the rules and routes an earlier run left behind", "removed", n,
			"table", p.Table, "priority", p.Priority)
	}
	if s.in, err = Install(h, p, tunIndex); err != nil {
		return fail(err)
	}
	log.Info("auto-route: installed", "table", p.Table, "priorities", fmt.Sprintf("%d-%d", p.Priority, p.Priority+BlockSize-1),
		"rules", len(p.Rules), "routes", len(p.Routes), "mark", fmt.Sprintf("%#x", mark))
	return s, nil
}

// Close removes what Start installed and releases the lock. It is
// idempotent.
func (s *Session) Close() error {
	var errs []error
	if s.in != nil {
		errs = append(errs, s.in.Remove())
		s.in = nil
		s.log.Info("auto-route: removed")
	}
	if s.h != nil {
		s.h.Close()
		s.h = nil
	}
	errs = append(errs, s.lock.Release())
	s.lock = nil
	return errors.Join(errs...)
}

// CleanupStale removes, in the calling thread's network namespace, what a
// killed gateway with this table and priority block left behind. It fails
// with ErrBusy when a running gateway owns the table.
func CleanupStale(table, priority int) (int, error) {
	lock, err := Acquire(table)
	if err != nil {
		return 0, err
	}
	h, err := NewHandle()
	if err != nil {
		return 0, errors.Join(err, lock.Release())
	}
	defer h.Close()
	n, err := Cleanup(h, table, priority)
	return n, errors.Join(err, lock.Release())
}
