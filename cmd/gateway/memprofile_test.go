package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteMemProfile_WritesAProfileAndLogsTheMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap.prof")
	var logs bytes.Buffer
	if err := writeMemProfile(path, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b { // pprof's gzip
		t.Fatalf("profile of %d bytes is not a gzipped pprof profile", len(b))
	}
	for _, want := range []string{"heap_inuse=", "stack_inuse=", "goroutines="} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q lacks %s", logs.String(), want)
		}
	}
}
