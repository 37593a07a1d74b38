package config

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// LoadOptions says where Load finds the layers above the defaults.
type LoadOptions struct {
	// File is a YAML config file; empty means none. A named file that
	// cannot be read or parsed is an error.
	File string
	// Flags are the command's parsed flags. The flags RegisterFlags added
	// override every other layer, but only when the user set them. Other
	// flags in the set are ignored; nil means no flags.
	Flags *pflag.FlagSet
	// Environ is the environment as "KEY=value" strings; nil means
	// os.Environ(). Every variable starting with TUNGATE_ must name a key.
	Environ []string
}

// Load builds the configuration from the defaults, the file, the
// environment and the flags, in rising precedence, and validates it.
//
// A file or environment variable naming an unknown key, a value that does
// not parse, and every Validate problem are all reported together in one
// *Error, each with its key path and where the value came from. Failing to
// read or parse the file is a plain error. On error the returned Config is
// nil.
func Load(opts LoadOptions) (*Config, error) {
	l := &loader{
		schema:     newSchema(),
		v:          viper.New(),
		opts:       opts,
		fileKeys:   map[string]bool{},
		envSource:  map[string]string{},
		flagSource: map[string]string{},
	}
	l.setDefaults()
	if err := l.readFile(); err != nil {
		return nil, err
	}
	l.readEnv()
	if err := l.bindFlags(); err != nil {
		return nil, err
	}
	return l.decode()
}

// loader holds the state of one Load call.
type loader struct {
	schema *schema
	v      *viper.Viper
	opts   LoadOptions

	problems   []Problem
	fileKeys   map[string]bool   // keys the file set
	envSource  map[string]string // key → variable that set it
	flagSource map[string]string // key → flag the user set
}

// setDefaults gives viper a default for every key. Besides being the
// lowest layer, this is what makes every key known to viper, so a key set
// only by the environment or a flag still reaches Unmarshal.
func (l *loader) setDefaults() {
	for key, val := range l.schema.plainValues(Default()) {
		l.v.SetDefault(key, val)
	}
}

// readFile merges the known keys of the config file into viper's config
// layer and records a problem for each unknown one.
func (l *loader) readFile() error {
	if l.opts.File == "" {
		return nil
	}
	data, err := os.ReadFile(l.opts.File)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	fv := viper.New()
	fv.SetConfigType("yaml")
	if err := fv.ReadConfig(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("config: parse %s: %w", l.opts.File, err)
	}
	known := l.checkTree(fv.AllSettings(), "")
	return l.v.MergeConfigMap(known)
}

// checkTree returns the part of a file's tree that names known keys and
// records a problem for the rest: unknown keys (with every leaf below them,
// so "stack.gvisr.sack" is named in full), values where a section belongs,
// and sections where a value belongs.
func (l *loader) checkTree(tree map[string]any, prefix string) map[string]any {
	known := map[string]any{}
	for _, k := range sortedKeys(tree) {
		key, val := joinKey(prefix, k), tree[k]
		sub, isMap := val.(map[string]any)
		section, leaf := l.schema.sections[key], l.schema.leafType[key] != nil
		switch {
		case section && isMap:
			known[k] = l.checkTree(sub, key)
		case section && val == nil:
			// An empty section ("stack:") sets nothing.
		case section:
			l.fileProblem(key, fmt.Sprintf("is a section and needs keys below it (%s), not %s", strings.Join(l.childNames(key), ", "), describeKind(val)))
		case leaf && isMap:
			l.fileProblem(key, "expected a single value or list, got a mapping")
		case leaf:
			known[k] = val
			l.fileKeys[key] = true
		default:
			l.unknownTree(key, val)
		}
	}
	return known
}

func (l *loader) unknownTree(key string, val any) {
	if sub, ok := val.(map[string]any); ok && len(sub) > 0 {
		for _, k := range sortedKeys(sub) {
			l.unknownTree(key+"."+k, sub[k])
		}
		return
	}
	msg := "unknown key"
	if s := suggest(key, l.allKeys(), "."); s != "" {
		msg += "; did you mean " + s + "?"
	}
	l.fileProblem(key, msg)
}

func (l *loader) fileProblem(key, msg string) {
	l.problems = append(l.problems, Problem{Key: key, Message: msg, Source: l.opts.File})
}

func (l *loader) allKeys() []string {
	keys := make([]string, 0, len(l.schema.leaves))
	for _, lf := range l.schema.leaves {
		keys = append(keys, lf.key)
	}
	return keys
}

func (l *loader) childNames(section string) []string {
	var names []string
	for _, key := range append(l.allKeys(), sortedKeys(l.schema.sections)...) {
		if rest, ok := strings.CutPrefix(key, section+"."); ok && !strings.Contains(rest, ".") && !slices.Contains(names, rest) {
			names = append(names, rest)
		}
	}
	return names
}

// readEnv merges TUNGATE_* variables into the config layer, above the
// file. The environment is read here rather than by viper's AutomaticEnv so
// that it can be injected and every TUNGATE_ variable is checked: viper
// would silently ignore a misspelt one.
func (l *loader) readEnv() {
	environ := l.opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	byName := map[string]string{}
	var names []string
	for _, lf := range l.schema.leaves {
		byName[envName(lf.key)] = lf.key
		names = append(names, envName(lf.key))
	}
	tree := map[string]any{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) {
			continue
		}
		key, ok := byName[name]
		if !ok {
			l.unknownEnv(name, names)
			continue
		}
		if l.schema.isMappingList(key) {
			l.problems = append(l.problems, Problem{Key: key, Source: name,
				Message: "is a list of mappings, which the environment cannot express; set it in the config file"})
			continue
		}
		var v any = value
		if l.schema.isList(key) {
			v = splitList(value)
		}
		setPath(tree, key, v)
		l.envSource[key] = name
	}
	// MergeConfigMap cannot fail; it returns an error for the future only.
	_ = l.v.MergeConfigMap(tree)
}

func (l *loader) unknownEnv(name string, known []string) {
	msg := "unknown environment variable: no config key " +
		strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, envPrefix), "_", "."))
	if s := suggest(name, known, "_"); s != "" {
		msg += "; did you mean " + s + "?"
	}
	l.problems = append(l.problems, Problem{Key: name, Message: msg})
}

// setPath stores v in a nested map under a dotted key.
func setPath(tree map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := tree[p].(map[string]any)
		if !ok {
			sub = map[string]any{}
			tree[p] = sub
		}
		tree = sub
	}
	tree[parts[len(parts)-1]] = v
}

// bindFlags binds the flags RegisterFlags defines; viper consults a bound
// flag only when the user set it (pflag's Changed).
func (l *loader) bindFlags() error {
	if l.opts.Flags == nil {
		return nil
	}
	for name, key := range flagKeys() {
		f := l.opts.Flags.Lookup(name)
		if f == nil {
			continue
		}
		if err := l.v.BindPFlag(key, f); err != nil {
			return fmt.Errorf("config: bind flag --%s: %w", name, err)
		}
		if f.Changed {
			l.flagSource[key] = "--" + name
		}
	}
	return nil
}

// decode unmarshals the merged layers and validates the result. Validate
// problems about a key that already failed to decode are dropped: they
// would only restate the decode failure.
func (l *loader) decode() (*Config, error) {
	cfg := new(Config)
	err := l.v.UnmarshalExact(cfg, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = decodeHook
		dc.WeaklyTypedInput = false
	})
	var failed []string
	if err != nil {
		for _, p := range decodeProblems(err) {
			failed = append(failed, itemKey(p.Key))
			l.problems = append(l.problems, p)
		}
	}
	if verr, ok := cfg.Validate().(*Error); ok {
		for _, p := range verr.Problems {
			if !slices.ContainsFunc(failed, func(base string) bool { return under(p.Key, base) || under(base, itemKey(p.Key)) }) {
				l.problems = append(l.problems, p)
			}
		}
	}
	if len(l.problems) == 0 {
		return cfg, nil
	}
	for i := range l.problems {
		if l.problems[i].Source == "" {
			l.problems[i].Source = l.source(baseKey(l.problems[i].Key))
		}
	}
	return nil, &Error{Problems: l.problems}
}

// source names the layer that supplied key's value, following precedence.
func (l *loader) source(key string) string {
	switch {
	case l.flagSource[key] != "":
		return l.flagSource[key]
	case l.envSource[key] != "":
		return l.envSource[key]
	case l.fileKeys[key]:
		return l.opts.File
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
