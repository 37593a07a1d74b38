package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

var prefixType = reflect.TypeFor[netip.Prefix]()

// decodeHook converts the plain values of the layers (YAML scalars,
// environment strings, flag strings) to the field types of Config, strictly:
// mapstructure's weak typing would wrap -1 into a uint32 fwmark, read a bare
// 10 as 10ns, or truncate 1.5 to 1, and none of that should pass silently.
func decodeHook(from, to reflect.Type, data any) (any, error) {
	switch {
	case to == durationType:
		return toDuration(data)
	case to == prefixType:
		return toPrefix(data)
	case to.Kind() == reflect.Slice && from.Kind() == reflect.String:
		return splitList(data.(string)), nil
	case to.Kind() == reflect.Bool:
		return toBool(data)
	case to.Kind() == reflect.String:
		return toString(data)
	case isInteger(to.Kind()):
		return toInteger(data, to)
	}
	return data, nil
}

func toDuration(data any) (any, error) {
	switch v := data.(type) {
	case time.Duration:
		return v, nil
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration (e.g. 500ms, 10s, 5m, 1h30m)", v)
		}
		return d, nil
	default:
		return nil, fmt.Errorf("%v is not a duration: write it with a unit (e.g. 10s, 5m)", data)
	}
}

func toPrefix(data any) (any, error) {
	s, ok := data.(string)
	if !ok {
		return nil, fmt.Errorf("%v is not an address/prefix-length (e.g. 198.18.0.1/15)", data)
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%q is not an address/prefix-length (e.g. 198.18.0.1/15)", s)
	}
	return p, nil
}

// splitList reads a comma-separated list; blanks around items and empty
// items are dropped, so "" is the empty list.
func splitList(s string) []string {
	out := []string{}
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func toBool(data any) (any, error) {
	switch v := data.(type) {
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q is not a boolean (true or false)", v)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%v is not a boolean (true or false)", data)
	}
}

// toString accepts any scalar: a YAML password of 12345 is a string to the
// user even though YAML reads a number.
func toString(data any) (any, error) {
	switch v := data.(type) {
	case string:
		return v, nil
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(v), nil
	default:
		return nil, fmt.Errorf("expected a single value, got %s", describeKind(data))
	}
}

func isInteger(k reflect.Kind) bool {
	return reflect.Int <= k && k <= reflect.Uint64
}

// toInteger converts data to the integer type to, rejecting fractions,
// booleans and values out of the type's range.
func toInteger(data any, to reflect.Type) (any, error) {
	lo, hi := integerRange(to)
	out := reflect.New(to).Elem()
	switch v := data.(type) {
	case string:
		return parseInteger(v, to, lo, hi)
	case float32, float64:
		f := reflect.ValueOf(v).Float()
		if f != math.Trunc(f) {
			return nil, fmt.Errorf("%v is not an integer", v)
		}
		if f < float64(lo) || f > float64(hi) {
			return nil, fmt.Errorf("%v is out of range [%d, %d]", v, lo, hi)
		}
		if to.Kind() >= reflect.Uint {
			out.SetUint(uint64(f))
		} else {
			out.SetInt(int64(f))
		}
		return out.Interface(), nil
	}
	rv := reflect.ValueOf(data)
	switch {
	case rv.CanInt():
		n := rv.Int()
		if n < lo || (n >= 0 && uint64(n) > hi) {
			return nil, fmt.Errorf("%d is out of range [%d, %d]", n, lo, hi)
		}
		return rv.Convert(to).Interface(), nil
	case rv.CanUint():
		if rv.Uint() > hi {
			return nil, fmt.Errorf("%d is out of range [%d, %d]", rv.Uint(), lo, hi)
		}
		return rv.Convert(to).Interface(), nil
	}
	return nil, fmt.Errorf("expected an integer, got %s", describeKind(data))
}

func parseInteger(s string, to reflect.Type, lo int64, hi uint64) (any, error) {
	t := strings.TrimSpace(s)
	var rv reflect.Value
	if to.Kind() >= reflect.Uint {
		n, err := strconv.ParseUint(t, 0, to.Bits())
		if err != nil {
			return nil, integerError(s, err, lo, hi)
		}
		rv = reflect.ValueOf(n)
	} else {
		n, err := strconv.ParseInt(t, 0, to.Bits())
		if err != nil {
			return nil, integerError(s, err, lo, hi)
		}
		rv = reflect.ValueOf(n)
	}
	return rv.Convert(to).Interface(), nil
}

func integerError(s string, err error, lo int64, hi uint64) error {
	if errors.Is(err, strconv.ErrRange) || (lo >= 0 && strings.HasPrefix(strings.TrimSpace(s), "-")) {
		return fmt.Errorf("%s is out of range [%d, %d]", strings.TrimSpace(s), lo, hi)
	}
	return fmt.Errorf("%q is not an integer", s)
}

// integerRange returns the bounds of an integer type.
func integerRange(t reflect.Type) (lo int64, hi uint64) {
	bits := t.Bits()
	if t.Kind() >= reflect.Uint {
		return 0, math.MaxUint64 >> (64 - bits)
	}
	return -1 << (bits - 1), 1<<(bits-1) - 1
}

func describeKind(data any) string {
	switch reflect.ValueOf(data).Kind() {
	case reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Bool:
		return fmt.Sprintf("the boolean %v", data)
	case reflect.Invalid:
		return "nothing"
	default:
		return fmt.Sprintf("%v", data)
	}
}

// decodeProblems turns a mapstructure error tree into one Problem per
// failed key.
func decodeProblems(err error) []Problem {
	switch e := err.(type) {
	case *mapstructure.DecodeError:
		return []Problem{{Key: e.Name(), Message: decodeMessage(e.Unwrap())}}
	case interface{ Unwrap() []error }:
		var out []Problem
		for _, inner := range e.Unwrap() {
			out = append(out, decodeProblems(inner)...)
		}
		return out
	case interface{ Unwrap() error }:
		return decodeProblems(e.Unwrap())
	}
	return []Problem{{Message: err.Error()}}
}

// decodeMessage rewords mapstructure's own errors (the hook's errors are
// already worded for users).
func decodeMessage(err error) string {
	var ute *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("expected %s, got %s", describeType(ute.Expected.Type()), describeKind(ute.Value))
	}
	return err.Error()
}

func describeType(t reflect.Type) string {
	switch {
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Struct:
		return "a mapping"
	default:
		return "a " + t.String()
	}
}
