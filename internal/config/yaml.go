package config

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Redacted replaces a non-empty password or api.secret in WriteYAML's output.
const Redacted = "<redacted>"

// WriteYAML writes c as a YAML document in the file's key order, which Load
// reads back to the same Config. Non-empty passwords and api.secret are written
// as Redacted so the output can be shown or logged.
func (c *Config) WriteYAML(w io.Writer) error {
	s := newSchema()
	values := s.plainValues(c)
	if c.Upstream.Password != "" {
		values["upstream.password"] = Redacted
	}
	if c.API.Secret != "" {
		values["api.secret"] = Redacted
	}
	redactOutbounds(values["outbounds"])
	bw := bufio.NewWriter(w)
	var open []string // the sections of the previous key
	for _, lf := range s.leaves {
		parts := strings.Split(lf.key, ".")
		sections, name := parts[:len(parts)-1], parts[len(parts)-1]
		common := 0
		for common < len(open) && common < len(sections) && open[common] == sections[common] {
			common++
		}
		for depth := common; depth < len(sections); depth++ {
			fmt.Fprintf(bw, "%s%s:\n", indent(depth), sections[depth])
		}
		open = sections
		writeValue(bw, len(sections), name, values[lf.key])
	}
	return bw.Flush()
}

func writeValue(w io.Writer, depth int, name string, v any) {
	list, isList := v.([]any)
	switch {
	case isList && len(list) == 0:
		fmt.Fprintf(w, "%s%s: []\n", indent(depth), name)
	case isList:
		fmt.Fprintf(w, "%s%s:\n", indent(depth), name)
		for _, item := range list {
			if fields, ok := item.([]field); ok {
				writeMapping(w, depth+1, fields)
				continue
			}
			fmt.Fprintf(w, "%s  - %s\n", indent(depth), scalar(item))
		}
	default:
		fmt.Fprintf(w, "%s%s: %s\n", indent(depth), name, scalar(v))
	}
}

// writeMapping writes one mapping of a list, its lists in flow style.
func writeMapping(w io.Writer, depth int, fields []field) {
	for i, f := range fields {
		lead := "  "
		if i == 0 {
			lead = "- "
		}
		v := scalar(f.value)
		if list, ok := f.value.([]any); ok {
			items := make([]string, len(list))
			for j, item := range list {
				items[j] = scalar(item)
			}
			v = "[" + strings.Join(items, ", ") + "]"
		}
		fmt.Fprintf(w, "%s%s%s: %s\n", indent(depth-1), lead, f.name, v)
	}
}

// scalar quotes strings: YAML double-quoted escapes are a superset of Go's
// strconv.Quote output, and quoting keeps "yes", "1e3" or "" strings.
func scalar(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func indent(depth int) string { return strings.Repeat("  ", depth) }

// redactOutbounds replaces the outbounds' passwords in plain values.
func redactOutbounds(v any) {
	list, _ := v.([]any)
	for _, item := range list {
		fields, _ := item.([]field)
		for i := range fields {
			if fields[i].name == "password" {
				fields[i].value = Redacted
			}
		}
	}
}
