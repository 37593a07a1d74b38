package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestDemo_ShowsRequestsRefusalHalfCloseLadderAndCleansUp(t *testing.T) {
	code, stdout, stderr := runAsRoot(t, "demo")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		`200 OK "hello from 198.19.0.2; you came from 198.19.0.1:`,
		"1024 KiB, SHA-256",
		"connection refused",
		"sent 25 bytes + FIN, got 51 bytes + FIN back",
		// The ladder: handshake, the app's half-close, the teardown.
		"app ──► gw  S ", "app ◄── gw  S.", "ESTABLISHED → CLOSE-WAIT", "→ CLOSED",
		"What happened:",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	m := regexp.MustCompile(`namespaces (\S+) and (\S+) removed`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no clean-up line:\n%s", stdout)
	}
	for _, ns := range m[1:] {
		if _, err := os.Stat("/run/netns/" + ns); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists (%v)", ns, err)
		}
	}
}

func TestDemo_UnknownStackExits2(t *testing.T) {
	p := newFakeProcess(t)
	if code := p.app.execute([]string{"demo", "--stack", "bsd"}); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
}
