package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConformance_PassingCorpusExitsZeroWithSummaryLast(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.run("conformance", "../../stack/tcp/testdata/pkt/listen"); code != exitOK {
		t.Fatalf("exit %d; stdout %q stderr %q", code, p.stdout.String(), p.stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(p.stdout.String()), "\n")
	if last := lines[len(lines)-1]; !strings.HasSuffix(last, " passed, 0 failed, 0 skipped") {
		t.Errorf("last line %q", last)
	}
}

func TestConformance_FailureExitsOneAndWritesJSON(t *testing.T) {
	dir := t.TempDir()
	bad := "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 < S 0:0(0) win 65535\n+0 > S. 0:0(0) ack 2 <mss 1460>\n"
	if err := os.WriteFile(filepath.Join(dir, "bad.pkt"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	skip := "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 connect(3, ..., ...) = 0\n"
	if err := os.WriteFile(filepath.Join(dir, "skip.pkt"), []byte(skip), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.json")
	p := newFakeProcess(t)
	if code := p.run("conformance", "--json", out, dir); code != exitFailure {
		t.Fatalf("exit %d; want %d; stdout %q", code, exitFailure, p.stdout.String())
	}
	if !strings.Contains(p.stdout.String(), "bad.pkt:3") || !strings.HasSuffix(strings.TrimSpace(p.stdout.String()), "0 passed, 1 failed, 1 skipped") {
		t.Errorf("stdout %q", p.stdout.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res []struct{ Path, Status string }
	if err := json.Unmarshal(b, &res); err != nil || len(res) != 2 || res[0].Status != "FAIL" || res[1].Status != "SKIP" {
		t.Errorf("json %s (%v)", b, err)
	}
}
