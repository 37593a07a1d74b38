package config

import (
	"encoding"
	"reflect"
	"strings"
	"time"
)

// envPrefix starts the name of every environment variable the loader reads.
const envPrefix = "TUNGATE_"

var (
	durationType        = reflect.TypeFor[time.Duration]()
	textMarshalerType   = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// leaf is one settable key of Config, in declaration order.
type leaf struct {
	key string       // "stack.gvisor.sack"
	typ reflect.Type // the field's Go type
}

// schema lists the keys of Config, derived from its mapstructure tags so
// that the loader, the unknown-key check and the YAML writer cannot drift
// from the struct.
type schema struct {
	leaves   []leaf
	leafType map[string]reflect.Type
	sections map[string]bool // "tun", "stack", "stack.gvisor", ...
}

func newSchema() *schema {
	s := &schema{leafType: map[string]reflect.Type{}, sections: map[string]bool{}}
	s.walk(reflect.TypeFor[Config](), "")
	return s
}

func (s *schema) walk(t reflect.Type, prefix string) {
	for i := range t.NumField() {
		f := t.Field(i)
		key := joinKey(prefix, f.Tag.Get("mapstructure"))
		if isSection(f.Type) {
			s.sections[key] = true
			s.walk(f.Type, key)
			continue
		}
		s.leaves = append(s.leaves, leaf{key: key, typ: f.Type})
		s.leafType[key] = f.Type
	}
}

// isSection reports whether a field is a nested group of keys rather than
// a value: structs are, except those with a text form (netip.Prefix).
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshalerType)
}

// isList reports whether the key holds a list, which the environment
// spells as a comma-separated string.
func (s *schema) isList(key string) bool {
	t, ok := s.leafType[key]
	return ok && t.Kind() == reflect.Slice
}

// isMappingList reports whether the key holds a list of mappings
// (outbounds, route.rules).
func (s *schema) isMappingList(key string) bool {
	t, ok := s.leafType[key]
	return ok && t.Kind() == reflect.Slice && isSection(t.Elem())
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// envName is the environment variable that sets key.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// plainValues returns every leaf of c as the plain value a YAML file would
// hold: strings for durations and prefixes, []string for lists.
func (s *schema) plainValues(c *Config) map[string]any {
	out := make(map[string]any, len(s.leaves))
	root := reflect.ValueOf(c).Elem()
	for _, l := range s.leaves {
		out[l.key] = plain(fieldByKey(root, l.key))
	}
	return out
}

// fieldByKey follows a dotted key through nested structs by their tags.
func fieldByKey(v reflect.Value, key string) reflect.Value {
	for name := range strings.SplitSeq(key, ".") {
		t := v.Type()
		for i := range t.NumField() {
			if t.Field(i).Tag.Get("mapstructure") == name {
				v = v.Field(i)
				break
			}
		}
	}
	return v
}

// field is one key of a mapping in a list, as plain returns it.
type field struct {
	name  string
	value any
}

func plain(v reflect.Value) any {
	switch {
	case v.Type() == durationType:
		return shortDuration(time.Duration(v.Int()))
	case v.Type().Implements(textMarshalerType):
		text, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err != nil {
			return "" // only an invalid prefix fails; Validate reports it
		}
		return string(text)
	case v.Kind() == reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = plain(v.Index(i))
		}
		return out
	case v.Kind() == reflect.Struct:
		// An item of a list of mappings (outbounds, route.rules): its set
		// fields, in declaration order.
		var out []field
		for i := range v.NumField() {
			if f := v.Field(i); !f.IsZero() {
				out = append(out, field{v.Type().Field(i).Tag.Get("mapstructure"), plain(f)})
			}
		}
		return out
	default:
		return v.Interface()
	}
}

// shortDuration formats d as time.Duration.String does, minus zero
// trailing units: 5m rather than 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// suggest returns the candidate closest to name by edit distance, or ""
// when none is close enough to be a likely typo. A candidate whose last
// segment equals name's last segment wins outright ("mtu" → "tun.mtu").
func suggest(name string, candidates []string, sep string) string {
	last := name[strings.LastIndex(name, sep)+1:]
	var sameLast []string
	for _, c := range candidates {
		if c[strings.LastIndex(c, sep)+1:] == last {
			sameLast = append(sameLast, c)
		}
	}
	if len(sameLast) == 1 {
		return sameLast[0]
	}
	best, bestDist := "", 3+len(name)/10
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
