package netlab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// runLocked runs f on a new goroutine locked to its OS thread and waits for
// it. The thread is never unlocked, so whatever f does to it (setns,
// unshare) ends with the goroutine: the runtime terminates a thread whose
// goroutine exits while locked. A panic in f is re-raised in the caller, and
// runtime.Goexit in f (t.FailNow, say) ends the caller's goroutine too.
func runLocked(f func() error) error {
	type result struct {
		err      error
		finished bool // f returned normally
		panic    any  // recovered value; nil with !finished means Goexit
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var r result
		defer func() {
			if !r.finished {
				r.panic = recover()
			}
			done <- r
		}()
		r.err = f()
		r.finished = true
	}()
	r := <-done
	switch {
	case r.finished:
		return r.err
	case r.panic != nil:
		panic(r.panic)
	default:
		runtime.Goexit()
		return nil
	}
}

// createNamedNS makes a new network namespace and mounts it at
// netnsRunDir/name, the way `ip netns add` does, so that `ip netns exec`
// and CleanupStale find it. On error nothing is left behind.
func createNamedNS(name string) (netns.NsHandle, error) {
	if err := ensureRunDir(); err != nil {
		return netns.None(), err
	}
	path := filepath.Join(netnsRunDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("netlab: create namespace %q: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return netns.None(), errors.Join(fmt.Errorf("netlab: create namespace %q: %w", name, err), os.Remove(path))
	}
	err = runLocked(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount to %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return netns.None(), errors.Join(fmt.Errorf("netlab: create namespace %q: %w", name, err), os.Remove(path))
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), errors.Join(fmt.Errorf("netlab: open namespace %q: %w", name, err), deleteNamedNS(name))
	}
	return h, nil
}

// ensureRunDir makes netnsRunDir a shared mount point, as iproute2 does, so
// that removing a name also reaches mount namespaces forked from this one
// (such as those of `ip netns exec`).
func ensureRunDir() error {
	if err := os.MkdirAll(netnsRunDir, 0o755); err != nil {
		return fmt.Errorf("netlab: create %s: %w", netnsRunDir, err)
	}
	err := unix.Mount("", netnsRunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if !errors.Is(err, unix.EINVAL) {
		return wrapRunDirErr(err)
	}
	// Not a mount point yet: bind it onto itself, then share it.
	if err := unix.Mount(netnsRunDir, netnsRunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return wrapRunDirErr(err)
	}
	return wrapRunDirErr(unix.Mount("", netnsRunDir, "none", unix.MS_SHARED|unix.MS_REC, ""))
}

func wrapRunDirErr(err error) error {
	if err != nil {
		return fmt.Errorf("netlab: make %s a shared mount: %w", netnsRunDir, err)
	}
	return nil
}

// deleteNamedNS unmounts and removes a namespace name. The namespace itself
// (and its devices) disappears once no process, socket or descriptor refers
// to it. A name that is already gone is not an error.
func deleteNamedNS(name string) error {
	path := filepath.Join(netnsRunDir, name)
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netlab: unmount namespace %q: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netlab: remove namespace %q: %w", name, err)
	}
	return nil
}
