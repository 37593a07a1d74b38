package netlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// lockDir holds one lock file per live Lab. A Lab holds an exclusive flock
// on its file for its whole life; the kernel drops it when the process dies,
// however it dies. That is how CleanupStale tells namespaces of crashed runs
// from those of Labs still in use by this or another process (go test runs
// packages in parallel processes).
const lockDir = "/run/tungate-netlab"

// errLabBusy means a live Lab holds the name's lock.
var errLabBusy = errors.New("netlab: lab name in use")

func lockPath(name string) string { return filepath.Join(lockDir, name+".lock") }

// lockLab takes the liveness lock of a lab name without blocking; it returns
// errLabBusy when a live Lab holds it.
func lockLab(name string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: create %s: %w", lockDir, err)
	}
	for {
		f, err := os.OpenFile(lockPath(name), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("netlab: open lock of %q: %w", name, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("%w: %q", errLabBusy, name)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("netlab: lock %q: %w", name, err)
		}
		// The previous holder may have removed the file between our open
		// and flock; a lock on an unlinked file guards nothing.
		if sameFile(f, lockPath(name)) {
			return f, nil
		}
		f.Close()
	}
}

func sameFile(f *os.File, path string) bool {
	held, err := f.Stat()
	if err != nil {
		return false
	}
	named, err := os.Stat(path)
	if err != nil {
		return false
	}
	return os.SameFile(held, named)
}

// unlockLab removes the lock file while still holding it, then releases it.
func unlockLab(name string, f *os.File) error {
	var errs []error
	if err := os.Remove(lockPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netlab: remove lock of %q: %w", name, err))
	}
	if err := f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("netlab: release lock of %q: %w", name, err))
	}
	return errors.Join(errs...)
}

// removeLabNamespaces deletes both namespace names of a lab; missing ones
// are fine.
func removeLabNamespaces(name string) error {
	return errors.Join(deleteNamedNS(name+"-c"), deleteNamedNS(name+"-s"))
}

// CleanupStale removes the namespaces and lock files that Labs with the
// given prefix (DefaultPrefix when empty) left behind when their process
// died without Close. Labs still alive, in this process or any other, are
// left alone. New calls it; a TestMain may call it too. It needs root.
func CleanupStale(prefix string) error {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixPattern.MatchString(prefix) {
		return fmt.Errorf("netlab: invalid name prefix %q (want %s)", prefix, prefixPattern)
	}
	names, err := staleCandidates(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		lock, err := lockLab(name)
		if errors.Is(err, errLabBusy) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, removeLabNamespaces(name), unlockLab(name, lock))
	}
	return errors.Join(errs...)
}

// staleCandidates lists lab names with the prefix that have a namespace or a
// lock file. Each name is listed once.
func staleCandidates(prefix string) ([]string, error) {
	labName := `^(` + regexp.QuoteMeta(prefix) + `[0-9a-f]{6})`
	nsPattern := regexp.MustCompile(labName + `-[cs]$`)
	lockPattern := regexp.MustCompile(labName + `\.lock$`)
	seen := map[string]bool{}
	var names []string
	for _, dir := range []struct {
		path    string
		pattern *regexp.Regexp
	}{{netnsRunDir, nsPattern}, {lockDir, lockPattern}} {
		entries, err := os.ReadDir(dir.path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("netlab: list %s: %w", dir.path, err)
		}
		for _, e := range entries {
			m := dir.pattern.FindStringSubmatch(e.Name())
			if m == nil || seen[m[1]] {
				continue
			}
			seen[m[1]] = true
			names = append(names, m[1])
		}
	}
	return names, nil
}
