package config

import (
	"fmt"
	"strings"
)

// Problem is one unknown or invalid setting.
type Problem struct {
	// Key is the key path of the setting, with list indexes
	// ("tun.addresses[1]"), or the name of an unknown environment variable.
	Key string
	// Message says what is wrong and, where it helps, what is accepted.
	Message string
	// Source names where the offending value came from when Load can tell:
	// a flag ("--mtu"), an environment variable ("TUNGATE_TUN_MTU") or the
	// config file's path. It is empty for built-in defaults and for problems
	// found by Validate called directly.
	Source string
}

// Error formats the problem as "key: message (from source)".
func (p Problem) Error() string {
	var b strings.Builder
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	if p.Source != "" {
		fmt.Fprintf(&b, " (from %s)", p.Source)
	}
	return b.String()
}

// Error is returned by Validate and Load when the configuration is not
// usable. It holds every problem found, not only the first.
type Error struct {
	Problems []Problem
}

// Error lists the problems, one per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems as errors, so errors.As finds a Problem.
func (e *Error) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// problems collects Problems while a configuration is checked.
type problems []Problem

func (ps *problems) add(key, format string, args ...any) {
	*ps = append(*ps, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
}

// err returns nil when nothing was collected, else an *Error.
func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &Error{Problems: ps}
}

// baseKey strips list indexes from a problem key: tun.addresses[1] →
// tun.addresses, route.rules[1].port → route.rules.
func baseKey(key string) string {
	if i := strings.IndexByte(key, '['); i >= 0 {
		return key[:i]
	}
	return key
}

// itemKey is what a decode failure at key invalidates: the list item it is
// in ("route.rules[1]" for "route.rules[1].port[0]"), or the key itself.
// Validate's problems at or below it would only restate the failure.
func itemKey(key string) string {
	if i := strings.IndexByte(key, ']'); i >= 0 {
		return key[:i+1]
	}
	return key
}

// under reports whether key is base or lies below it.
func under(key, base string) bool {
	return key == base || strings.HasPrefix(key, base+".") || strings.HasPrefix(key, base+"[")
}
