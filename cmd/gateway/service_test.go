package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceUnit_IsCleanAndHardened checks configs/tungate.service with
// systemd-analyze: verify reports nothing, and the offline security
// score stays "OK" (at most 3.0 of 10). ExecStart points at this test's
// binary, since verify wants an executable there.
func TestServiceUnit_IsCleanAndHardened(t *testing.T) {
	unit, err := os.ReadFile("../../configs/tungate.service")
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, want := range []string{"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID",
		"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW\n", "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n",
		"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "DeviceAllow=/dev/net/tun rw",
		"ExecStart=/usr/local/bin/gateway run --config /etc/tungate/gateway.yaml"} {
		if !strings.Contains(text, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian: systemd)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tungate.service")
	text = strings.ReplaceAll(text, "/usr/local/bin/gateway", self)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=30", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
}
