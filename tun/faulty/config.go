package faulty

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/tungate/tungate/internal/clock"
)

// Direction selects the packets a Config applies to.
type Direction uint8

const (
	// Inbound packets are read from the wrapped device, towards the stack.
	Inbound Direction = 1 << iota
	// Outbound packets are written to the wrapped device, towards the app.
	Outbound
	// Both directions; also what a zero Directions means.
	Both = Inbound | Outbound
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "in"
	case Outbound:
		return "out"
	case Both, 0:
		return "both"
	default:
		return fmt.Sprintf("Direction(%d)", uint8(d))
	}
}

// Defaults for zero Config fields.
const (
	// DefaultReorderDepth: a held packet waits for one later packet, the
	// smallest reordering that still exercises out-of-order handling.
	DefaultReorderDepth = 1
	// DefaultReorderTimeout bounds how long a held packet waits for later
	// ones, so that the last packet of a burst is late rather than stuck
	// until the sender retransmits. It is well below the 200 ms minimum
	// RTO of Linux TCP, so a hold alone never causes a retransmission.
	DefaultReorderTimeout = 10 * time.Millisecond
	// MaxReorderDepth caps ReorderDepth; deeper holds only delay.
	MaxReorderDepth = 1024
)

// Config says which faults a Device injects. Each probability applies
// independently to every packet of every selected direction; each
// direction has its own random sequence, so the faults are reproducible
// for a given Seed and packet sequence. The zero Config injects nothing:
// the Device is a pass-through.
type Config struct {
	// Seed of the random sequences. The default 0 is a seed like any
	// other, so runs without one are reproducible too.
	Seed int64

	// Loss is the probability that a packet is dropped.
	Loss float64
	// Duplicate is the probability that a packet is delivered twice, the
	// copy right behind the original.
	Duplicate float64
	// Reorder is the probability that a packet is held back and delivered
	// behind the ReorderDepth packets that follow it (a held packet does
	// not count for another one).
	Reorder float64
	// ReorderDepth is how many later packets a held packet waits for;
	// 0 means DefaultReorderDepth.
	ReorderDepth int
	// ReorderTimeout is the longest a packet is held when fewer than
	// ReorderDepth packets follow; 0 means DefaultReorderTimeout.
	ReorderTimeout time.Duration

	// Delay holds every packet this long before delivery (netem's delay).
	Delay time.Duration
	// Jitter adds a uniformly distributed offset in [-Jitter, +Jitter] to
	// each packet's delay (clamped at no delay). Packets whose delays
	// overlap are delivered in order of their due time, so jitter
	// reorders, as it does in netem.
	Jitter time.Duration

	// Directions the faults apply to; 0 means Both.
	Directions Direction

	// Clock drives delays and reorder timeouts; nil means clock.Real().
	// Tests pass a *clock.Manual.
	Clock clock.Clock
	// Logger receives errors of delayed writes; nil discards them.
	Logger *slog.Logger
}

// directions returns the effective Directions.
func (c *Config) directions() Direction {
	if c.Directions == 0 {
		return Both
	}
	return c.Directions
}

// injects reports whether c does anything to the packets of dir.
func (c *Config) injects(dir Direction) bool {
	if c.directions()&dir == 0 {
		return false
	}
	return c.Loss > 0 || c.Duplicate > 0 || c.Reorder > 0 || c.Delay > 0 || c.Jitter > 0
}

func (c *Config) reorderDepth() int {
	if c.ReorderDepth == 0 {
		return DefaultReorderDepth
	}
	return c.ReorderDepth
}

func (c *Config) reorderTimeout() time.Duration {
	if c.ReorderTimeout == 0 {
		return DefaultReorderTimeout
	}
	return c.ReorderTimeout
}

// Validate returns every problem of c, each naming its field, or nil.
func (c Config) Validate() error {
	var errs []error
	for _, p := range []struct {
		name string
		v    float64
	}{{"Loss", c.Loss}, {"Duplicate", c.Duplicate}, {"Reorder", c.Reorder}} {
		if !(p.v >= 0 && p.v <= 1) { // also rejects NaN
			errs = append(errs, fmt.Errorf("faulty: %s %v is not a probability in [0, 1]", p.name, p.v))
		}
	}
	if c.ReorderDepth < 0 || c.ReorderDepth > MaxReorderDepth {
		errs = append(errs, fmt.Errorf("faulty: ReorderDepth %d outside [0, %d]", c.ReorderDepth, MaxReorderDepth))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ReorderTimeout", c.ReorderTimeout}, {"Delay", c.Delay}, {"Jitter", c.Jitter}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("faulty: %s %v is negative", d.name, d.v))
		}
	}
	if c.Directions&^Both != 0 {
		errs = append(errs, fmt.Errorf("faulty: Directions %d has unknown bits", uint8(c.Directions)))
	}
	return errors.Join(errs...)
}

// String formats the fault fields of c as a spec that ParseSpec reads
// back, leaving out fields at their zero value ("" for the zero Config).
func (c Config) String() string {
	var parts []string
	add := func(key, val string) { parts = append(parts, key+"="+val) }
	prob := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	if c.Loss != 0 {
		add("loss", prob(c.Loss))
	}
	if c.Duplicate != 0 {
		add("dup", prob(c.Duplicate))
	}
	if c.Reorder != 0 {
		add("reorder", prob(c.Reorder))
	}
	if c.ReorderDepth != 0 {
		add("depth", strconv.Itoa(c.ReorderDepth))
	}
	if c.ReorderTimeout != 0 {
		add("hold", c.ReorderTimeout.String())
	}
	if c.Delay != 0 {
		add("delay", c.Delay.String())
	}
	if c.Jitter != 0 {
		add("jitter", c.Jitter.String())
	}
	if c.Seed != 0 {
		add("seed", strconv.FormatInt(c.Seed, 10))
	}
	if c.Directions != 0 && c.Directions != Both {
		add("dir", c.Directions.String())
	}
	return strings.Join(parts, ",")
}

// SpecKeys documents the keys ParseSpec accepts, for flag help texts.
const SpecKeys = "loss, dup, reorder (probabilities: 0.01 or 1%), depth (packets), " +
	"hold (reorder timeout), delay, jitter (durations: 5ms), seed (integer), dir (in|out|both)"

// ParseSpec parses a comma-separated list of key=value pairs, such as
// "loss=0.01,dup=0.5%,reorder=0.02,delay=5ms,seed=42,dir=both", into a
// Config (see SpecKeys). Spaces around pairs are ignored; the empty spec
// is the zero Config. Errors name the offending key, and the result is
// valid (Config.Validate returns nil).
func ParseSpec(s string) (Config, error) {
	var c Config
	seen := make(map[string]bool)
	for pair := range strings.SplitSeq(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		key, val, ok := strings.Cut(pair, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !ok || key == "" {
			return Config{}, fmt.Errorf("faulty: spec %q: %q is not key=value", s, pair)
		}
		if seen[key] {
			return Config{}, fmt.Errorf("faulty: spec %q: %s given twice", s, key)
		}
		seen[key] = true
		if err := c.set(key, val); err != nil {
			return Config{}, fmt.Errorf("faulty: spec %q: %s: %w", s, key, err)
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("faulty: spec %q: %w", s, err)
	}
	return c, nil
}

// set parses val into the field key names.
func (c *Config) set(key, val string) error {
	var err error
	switch key {
	case "loss":
		c.Loss, err = parseProb(val)
	case "dup":
		c.Duplicate, err = parseProb(val)
	case "reorder":
		c.Reorder, err = parseProb(val)
	case "depth":
		c.ReorderDepth, err = strconv.Atoi(val)
		if err == nil && (c.ReorderDepth < 1 || c.ReorderDepth > MaxReorderDepth) {
			err = fmt.Errorf("%d outside [1, %d]", c.ReorderDepth, MaxReorderDepth)
		}
	case "hold":
		c.ReorderTimeout, err = parseDuration(val)
	case "delay":
		c.Delay, err = parseDuration(val)
	case "jitter":
		c.Jitter, err = parseDuration(val)
	case "seed":
		c.Seed, err = strconv.ParseInt(val, 10, 64)
	case "dir":
		c.Directions, err = parseDirection(val)
	default:
		return fmt.Errorf("unknown key (known: %s)", SpecKeys)
	}
	return err
}

// parseProb reads a probability as a fraction (0.01) or a percentage (1%).
func parseProb(s string) (float64, error) {
	scale := 1.0
	if num, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = num, 100
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	v /= scale
	if !(v >= 0 && v <= 1) {
		return 0, fmt.Errorf("%v is not a probability in [0, 1]", v)
	}
	return v, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 5ms", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%v is negative", d)
	}
	return d, nil
}

func parseDirection(s string) (Direction, error) {
	switch s {
	case "in":
		return Inbound, nil
	case "out":
		return Outbound, nil
	case "both":
		return Both, nil
	default:
		return 0, fmt.Errorf("%q is not in, out or both", s)
	}
}
