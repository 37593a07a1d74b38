package config

import (
	"reflect"
	"strings"
)

// Changed returns the keys whose values differ between a and b, in the
// file's order ("route.rules" for any change in the list of rules).
func Changed(a, b *Config) []string {
	s := newSchema()
	va, vb := s.plainValues(a), s.plainValues(b)
	var out []string
	for _, l := range s.leaves {
		if !reflect.DeepEqual(va[l.key], vb[l.key]) {
			out = append(out, l.key)
		}
	}
	return out
}

// restartOnly are the key prefixes a running gateway cannot change: the
// device, the stack, the mark its sockets carry (auto_route's rules
// exempt it), where the API listens, and the DNS side's shape
// (whether it runs, its mode, its address ranges and cache file), and
// the log format.
var restartOnly = []string{"tun.", "stack.", "upstream.fwmark", "api.listen", "api.trace_buffer", "dns.hijack", "dns.mode", "dns.fake_ip_range",
	"dns.fake_ip6_range", "dns.cache_file", "log.format"}

// NeedsRestart reports whether a change of key applies only after a
// restart.
func NeedsRestart(key string) bool {
	for _, p := range restartOnly {
		if key == p || strings.HasSuffix(p, ".") && strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// WithRestartOnly is next with every key that needs a restart as it is in
// cur: what a running gateway applies of next.
func WithRestartOnly(cur, next *Config) *Config {
	k := *next
	s := newSchema()
	from, to := reflect.ValueOf(cur).Elem(), reflect.ValueOf(&k).Elem()
	for _, l := range s.leaves {
		if NeedsRestart(l.key) {
			fieldByKey(to, l.key).Set(fieldByKey(from, l.key))
		}
	}
	return &k
}
