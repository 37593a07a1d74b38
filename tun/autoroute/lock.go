//go:build linux

package autoroute

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockDir holds one lock file per network namespace and table in use.
const LockDir = "/run/tungate"

// Lock is held by the gateway that owns a table in its network namespace,
// for as long as it runs: Cleanup of that table is safe only when nobody
// holds it. The kernel drops the flock when the process dies, however it
// dies.
type Lock struct {
	f    *os.File
	path string
}

// ErrBusy is wrapped by Acquire's error when a running process holds the
// lock.
var ErrBusy = errors.New("in use by a running gateway")

// Acquire takes the lock of table in the calling thread's network
// namespace, or fails with an error wrapping ErrBusy (naming the holder's
// pid) when another process holds it.
func Acquire(table int) (*Lock, error) {
	ns, err := netnsID()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("autoroute: lock: %w", err)
	}
	path := filepath.Join(LockDir, fmt.Sprintf("autoroute-%s-table-%d.lock", ns, table))
	// A file unlinked by a releasing holder between our open and flock is
	// locked in vain: check that the path still names it, else try again.
	for range 8 {
		f, err := tryLock(path, table)
		if err != nil {
			return nil, err
		}
		if f != nil {
			return &Lock{f: f, path: path}, nil
		}
	}
	return nil, fmt.Errorf("autoroute: lock %s: the file keeps being replaced", path)
}

func tryLock(path string, table int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("autoroute: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("autoroute: table %d is %w (pid %s; lock %s)", table, ErrBusy, strings.TrimSpace(string(holder)), path)
		}
		return nil, fmt.Errorf("autoroute: lock %s: %w", path, err)
	}
	fi, err1 := f.Stat()
	pi, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(fi, pi) {
		f.Close()
		return nil, nil
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// Release gives the lock up and removes its file.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Remove before unlocking, so that nobody locks a file about to vanish.
	err := os.Remove(l.path)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("autoroute: release lock: %w", err)
	}
	return nil
}

// netnsID names the calling thread's network namespace by its inode, so
// gateways in different namespaces never share a lock.
func netnsID() (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return "", fmt.Errorf("autoroute: network namespace: %w", err)
	}
	return strconv.FormatUint(st.Ino, 10), nil
}
