package netlab

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
)

// snapshotSections are the `ip` queries of RoutingSnapshot, in order.
var snapshotSections = [][]string{
	{"-4", "rule", "show"},
	{"-6", "rule", "show"},
	{"-4", "route", "show", "table", "all"},
	{"-6", "route", "show", "table", "all"},
}

// expiresPattern matches the remaining lifetime iproute2 prints for routes
// that expire ("expires 297sec"), with the space before it.
var expiresPattern = regexp.MustCompile(` expires -?[0-9]+sec`)

// RoutingSnapshot describes the namespace's policy rules and routes of every
// table, for tests that check a program left routing exactly as it found
// it: compare two snapshots for equality. It is the output of
//
//	ip -4 rule show
//	ip -6 rule show
//	ip -4 route show table all
//	ip -6 route show table all
//
// run in the namespace, each section preceded by a line "== ip ARGS". The
// one normalisation: the countdown of an expiring route (" expires 297sec",
// set by `ip route add ... expires` or learned from router advertisements)
// is removed, so that the same route snapshots the same a second later; the
// route itself stays in. Nothing else is filtered: route-cache entries (PMTU
// exceptions, which do carry expiry timers) are not part of `table all`
// output, because iproute2 lists them only for `ip route show cache`.
// After Close it returns an error wrapping net.ErrClosed.
func (n *NS) RoutingSnapshot() (string, error) {
	// Reading under mu keeps Close from removing the name halfway through.
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return "", fmt.Errorf("netlab: routing snapshot of %q: %w", n.Name, net.ErrClosed)
	}
	var b strings.Builder
	for _, args := range snapshotSections {
		out, err := n.ipOutput(args...)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "== ip %s\n", strings.Join(args, " "))
		b.WriteString(normalizeRoutes(out))
	}
	return b.String(), nil
}

// ipOutput runs `ip -n NAME args...`; iproute2 enters the namespace itself,
// which is lighter than `ip netns exec` (no remount of /sys).
func (n *NS) ipOutput(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"-n", n.Name}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("netlab: %s: ip %s: %w (%s)", n.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// normalizeRoutes removes what changes while the routing state does not.
func normalizeRoutes(s string) string {
	return expiresPattern.ReplaceAllString(s, "")
}
