package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
)

// memProfileOnSignal writes a heap profile to path and logs where the
// memory is each time the process gets SIGUSR1, so a running gateway with
// many connections can be measured without stopping it. The returned
// function ends the signal handling.
func memProfileOnSignal(path string, log *slog.Logger) (stop func()) {
	return onEachSignal(
		func(c chan<- os.Signal) { signal.Notify(c, syscall.SIGUSR1) },
		func(c chan<- os.Signal) { signal.Stop(c) },
		func() {
			if err := writeMemProfile(path, log); err != nil {
				log.Warn("memprofile", "err", err)
			}
		})
}

// onEachSignal runs f on its own goroutine for every signal notify
// starts delivering, until the returned function is called: it stops
// the delivery with stopNotify and waits for f to return.
func onEachSignal(notify, stopNotify func(chan<- os.Signal), f func()) (stop func()) {
	sigs := make(chan os.Signal, 1)
	notify(sigs)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-sigs:
				f()
			case <-done:
				return
			}
		}
	})
	return func() {
		stopNotify(sigs)
		close(done)
		wg.Wait()
	}
}

// writeMemProfile collects garbage, writes the heap profile to path and
// logs the runtime's account of the memory in use.
func writeMemProfile(path string, log *slog.Logger) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("memprofile: %w", err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("memprofile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("memprofile: %w", err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	log.Info("memory", "profile", path, "heap_inuse", ms.HeapInuse, "stack_inuse", ms.StackInuse,
		"goroutines", runtime.NumGoroutine(), "sys", ms.Sys)
	return nil
}
