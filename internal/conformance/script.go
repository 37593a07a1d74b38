// Package conformance runs packetdrill-style scripts against tungate's own
// TCP engine (stack/tcp) in virtual time and reports, per script, whether
// the engine sent exactly the segments the script expects.
//
// The engine runs in listen/accept mode: its handler accepts every SYN at
// once, as a listening socket would, and hands the connection to the
// script's accept call. The fake peer is 198.18.0.1:40000 (2001:2::1 for
// --ip_version=ipv6), the engine's side 198.19.0.2:8080; everything stays
// in memory. Virtual time is the engine's clock, a clock.Manual the
// runner advances in 1 ms steps: the engine's timers fire at their exact
// deadlines within a step, and the runner looks for what they sent after
// each one. Every expected segment must be sent within the tolerance
// (default 4 ms) of its script time, and any segment the script does not
// expect is a failure.
//
// Strict mode (the default, for the engine's own corpus) compares flags,
// relative sequence and ack numbers, payload length, the advertised window
// when the script gives one, and the exact option list in order, including
// TSvals (within the tolerance). Lenient mode, for scripts written for
// Linux or FreeBSD, skips windows, option order and values of MSS and
// window scale, options the script did not name, TSvals and socket options
// without an engine equivalent; it still checks flags, numbers, payload
// lengths, SACK blocks, TSecr and timing. It also emulates TSO/GSO, as
// Linux scripts see it: consecutive data segments sent at the same time,
// contiguous and otherwise identical, are merged to match an expected
// segment longer than one of them; and it ignores PSH, whose setting
// RFC 9293 leaves to the sender.
//
// A system call timed START...END (packetdrill's blocking call) is
// issued at START on its own goroutine and must return, with the
// expected result, within the tolerance of END while the later events
// run; END counts from the same base as START. One call blocks at a
// time; a call that returns is stamped with the virtual time of the
// event that unblocked it.
//
// Header flags beyond packetdrill's (for the engine's own scripts):
// --remote_isn=N (the peer's ISN; relative numbers stay relative), --mtu,
// --delayed_ack_ms, --msl2_ms, --fin_wait2_timeout_ms, --syn_ack_retries,
// --recv_buf, --no_timestamps, --no_sack, --no_wscale, --syncookies=2 (a
// SYN cookie for every SYN), --keepalive_idle_ms, --keepalive_intvl_ms,
// --keepalive_probes.
package conformance

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Script is a parsed .pkt file.
type Script struct {
	Path   string
	Flags  map[string]string // header flags (--name=value) without the dashes
	Events []Event
	// Skip, when set, is why the script cannot run on this runner.
	Skip string
	// PythonLine is the line of the first inline Python block (%{ ... }%),
	// which the runner does not run; 0 when there is none.
	PythonLine int
}

// EventKind says what an Event does.
type EventKind int

// Event kinds.
const (
	Inbound  EventKind = iota // < segment injected into the engine
	Outbound                  // > segment the engine must send
	Syscall                   // a socket call on the accepted connection
)

// Event is one timed line of a script.
type Event struct {
	Line int
	Text string
	Kind EventKind
	// Time: Relative adds Start to the previous event's time; AnyTime
	// (`*`) accepts any time; End > Start is an a~b range. Blocking marks
	// packetdrill's START...END system call: issued at Start, it must
	// return at End while later events run; End is relative to the same
	// base as Start (the previous event when Relative).
	Relative, AnyTime bool
	Blocking          bool
	Start, End        time.Duration
	HasEnd            bool

	Seg  SegSpec
	Call CallSpec
}

// SegSpec is a segment as a script writes it.
type SegSpec struct {
	Flags    string // letters as written: "S.", "P.", "R", "."
	Seq, End uint32 // start:end
	Len      uint32
	Ack      uint32
	HasAck   bool
	Win      uint32
	HasWin   bool
	Opts     []Option
	HasOpts  bool
	// AnyOpts is packetdrill's <...>: the options are not checked.
	AnyOpts bool
}

// Option is one TCP option of a script's <...> list.
type Option struct {
	Kind  string // mss, sackOK, nop, eol, wscale, TS, sack
	Val   uint32 // mss, wscale, TS val
	Ecr   uint32
	Sacks [][2]uint32
}

// CallSpec is a socket call and its expected result.
type CallSpec struct {
	Name  string
	Args  []string
	Ret   int64
	Errno string // expected errno name when Ret is -1
}

// ParseOptions are what the command line contributes to parsing.
type ParseOptions struct {
	Defines map[string]bool
}

// Parse parses a script's text.
func Parse(path, text string, po ParseOptions) (*Script, error) {
	s := &Script{Path: path, Flags: map[string]string{}}
	text = stripBlockComments(text)
	text, s.PythonLine = stripPython(text)
	// #ifdef nesting: each entry says whether the enclosing branch is live.
	var cond []bool
	live := func() bool {
		for _, c := range cond {
			if !c {
				return false
			}
		}
		return true
	}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := uncomment(lines[i])
		// A backquoted shell command may span lines: skip to its end.
		if shellStart(line) && strings.Count(line, "`")%2 == 1 {
			for i+1 < len(lines) && !strings.Contains(lines[i+1], "`") {
				i++
			}
			if i+1 < len(lines) {
				i++
			}
			continue
		}
		// A statement goes on over the next lines while a parenthesis,
		// bracket or brace is open (packetdrill's multi-line calls).
		for depth := nesting(line); depth > 0 && i+1 < len(lines); depth = nesting(line) {
			i++
			line += " " + uncomment(lines[i])
		}
		switch {
		case line == "":
			continue
		case strings.HasPrefix(line, "#ifdef "), strings.HasPrefix(line, "#ifndef "):
			name := strings.TrimSpace(strings.Fields(line)[1])
			cond = append(cond, po.Defines[name] == strings.HasPrefix(line, "#ifdef "))
			continue
		case line == "#else":
			if len(cond) == 0 {
				return nil, fmt.Errorf("%s:%d: #else without #ifdef", path, lineNo)
			}
			cond[len(cond)-1] = !cond[len(cond)-1]
			continue
		case line == "#endif":
			if len(cond) == 0 {
				return nil, fmt.Errorf("%s:%d: #endif without #ifdef", path, lineNo)
			}
			cond = cond[:len(cond)-1]
			continue
		}
		if !live() {
			continue
		}
		if strings.HasPrefix(line, "`") { // shell command: nothing to run here
			continue
		}
		if strings.HasPrefix(line, "--") {
			for _, f := range strings.Fields(line) {
				k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
				s.Flags[k] = v
			}
			continue
		}
		ev, err := parseEvent(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, lineNo, err)
		}
		if ev == nil { // backquoted shell line
			continue
		}
		ev.Line, ev.Text = lineNo, line
		s.Events = append(s.Events, *ev)
	}
	if len(cond) != 0 {
		return nil, fmt.Errorf("%s: unterminated #ifdef", path)
	}
	return s, nil
}

// uncomment drops a line's // comment and surrounding space; tabs count
// as spaces.
func uncomment(line string) string {
	if j := strings.Index(line, "//"); j >= 0 {
		line = line[:j]
	}
	return strings.TrimSpace(strings.ReplaceAll(line, "\t", " "))
}

// shellStart reports whether line starts a backquoted shell command,
// alone or after an event time ("+0 `tc qdisc ...`").
func shellStart(line string) bool {
	if strings.HasPrefix(line, "`") {
		return true
	}
	_, rest, ok := strings.Cut(line, " ")
	return ok && strings.HasPrefix(strings.TrimSpace(rest), "`")
}

// nesting is how many ( [ { the line leaves open.
func nesting(line string) int {
	d := 0
	for _, c := range line {
		switch c {
		case '(', '[', '{':
			d++
		case ')', ']', '}':
			d--
		}
	}
	return d
}

// stripPython removes inline Python blocks (%{ ... }%), keeping line
// numbers, and returns the line of the first one (0 when none).
func stripPython(text string) (string, int) {
	first := 0
	var b strings.Builder
	for {
		i := strings.Index(text, "%{")
		if i < 0 {
			b.WriteString(text)
			return b.String(), first
		}
		if first == 0 {
			first = strings.Count(b.String()+text[:i], "\n") + 1
		}
		// The block is the event's whole body: drop its time too.
		start := strings.LastIndex(text[:i], "\n") + 1
		b.WriteString(text[:start])
		j := strings.Index(text[i:], "}%")
		if j < 0 {
			return b.String(), first
		}
		b.WriteString(strings.Repeat("\n", strings.Count(text[start:i+j+2], "\n")))
		text = text[i+j+2:]
	}
}

func stripBlockComments(text string) string {
	var b strings.Builder
	for {
		i := strings.Index(text, "/*")
		if i < 0 {
			b.WriteString(text)
			return b.String()
		}
		b.WriteString(text[:i])
		j := strings.Index(text[i+2:], "*/")
		if j < 0 {
			return b.String()
		}
		// Keep line numbers: replace the comment by its newlines.
		b.WriteString(strings.Repeat("\n", strings.Count(text[i:i+2+j+2], "\n")))
		text = text[i+2+j+2:]
	}
}

// parseEvent parses "TIME REST"; it returns nil for a shell line.
func parseEvent(line string) (*Event, error) {
	tm, rest, ok := strings.Cut(line, " ")
	if !ok {
		return nil, fmt.Errorf("no event after time %q", line)
	}
	rest = strings.TrimSpace(rest)
	ev := &Event{}
	if err := parseTime(tm, ev); err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(rest, "`"):
		return nil, nil
	case strings.HasPrefix(rest, "<"), strings.HasPrefix(rest, ">"):
		ev.Kind = Inbound
		if rest[0] == '>' {
			ev.Kind = Outbound
		}
		seg, err := parseSegment(strings.TrimSpace(rest[1:]))
		if err != nil {
			return nil, err
		}
		ev.Seg = seg
	default:
		ev.Kind = Syscall
		c, err := parseCall(rest)
		if err != nil {
			return nil, err
		}
		ev.Call = c
	}
	if ev.Blocking && ev.Kind != Syscall {
		return nil, fmt.Errorf("START...END time on a packet: only system calls block")
	}
	if ev.HasEnd && ev.End < ev.Start {
		return nil, fmt.Errorf("time range %q ends before it starts", tm)
	}
	return ev, nil
}

func parseTime(tm string, ev *Event) error {
	if tm == "*" {
		ev.AnyTime = true
		return nil
	}
	a, b, isRange := strings.Cut(tm, "...")
	if isRange {
		ev.Blocking = true
	} else {
		a, b, isRange = strings.Cut(tm, "~")
	}
	if strings.HasPrefix(a, "+") {
		ev.Relative = true
		a = a[1:]
	}
	d, err := parseSeconds(a)
	if err != nil {
		return err
	}
	ev.Start = d
	if isRange {
		b = strings.TrimPrefix(b, "+")
		e, err := parseSeconds(b)
		if err != nil {
			return err
		}
		ev.End, ev.HasEnd = e, true
	}
	return nil
}

func parseSeconds(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("bad time %q", s)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// parseSegment parses "FLAGS start:end(len) [ack N] [win N] [<opts>]".
func parseSegment(s string) (SegSpec, error) {
	var seg SegSpec
	var opts string
	if i := strings.Index(s, "<"); i >= 0 {
		j := strings.LastIndex(s, ">")
		if j < i {
			return seg, fmt.Errorf("unterminated options in %q", s)
		}
		opts, s = s[i+1:j], s[:i]+s[j+1:]
		seg.HasOpts = true
		if strings.TrimSpace(opts) == "..." {
			seg.HasOpts, seg.AnyOpts = false, true
		}
	}
	f := strings.Fields(s)
	if len(f) < 2 {
		return seg, fmt.Errorf("segment %q: want FLAGS start:end(len)", s)
	}
	seg.Flags = f[0]
	for _, c := range seg.Flags {
		if !strings.ContainsRune("SFRP.EWU", c) {
			return seg, fmt.Errorf("unknown flag %q in %q", c, seg.Flags)
		}
	}
	var err error
	if seg.Seq, seg.End, seg.Len, err = parseRange(f[1]); err != nil {
		return seg, err
	}
	for i := 2; i < len(f); i++ {
		switch f[i] {
		case "ack", "win":
			if i+1 >= len(f) {
				return seg, fmt.Errorf("%s without value", f[i])
			}
			v, err := strconv.ParseUint(f[i+1], 10, 32)
			if err != nil {
				return seg, fmt.Errorf("bad %s %q", f[i], f[i+1])
			}
			if f[i] == "ack" {
				seg.Ack, seg.HasAck = uint32(v), true
			} else {
				seg.Win, seg.HasWin = uint32(v), true
			}
			i++
		default:
			return seg, fmt.Errorf("unsupported segment field %q", f[i])
		}
	}
	if seg.HasOpts {
		if seg.Opts, err = parseOptions(opts); err != nil {
			return seg, err
		}
	}
	return seg, nil
}

func parseRange(s string) (start, end, n uint32, err error) {
	a, rest, ok := strings.Cut(s, ":")
	b, l, ok2 := strings.Cut(rest, "(")
	if !ok || !ok2 || !strings.HasSuffix(l, ")") {
		return 0, 0, 0, fmt.Errorf("bad sequence range %q", s)
	}
	x, e1 := strconv.ParseUint(a, 10, 32)
	y, e2 := strconv.ParseUint(b, 10, 32)
	z, e3 := strconv.ParseUint(strings.TrimSuffix(l, ")"), 10, 32)
	if e1 != nil || e2 != nil || e3 != nil || uint32(y)-uint32(x) != uint32(z) {
		return 0, 0, 0, fmt.Errorf("bad sequence range %q", s)
	}
	return uint32(x), uint32(y), uint32(z), nil
}

func parseOptions(s string) ([]Option, error) {
	var out []Option
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) == 0 {
			continue
		}
		o := Option{Kind: f[0]}
		num := func(i int) (uint32, error) {
			if i >= len(f) {
				return 0, fmt.Errorf("option %q: missing value", part)
			}
			v, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("option %q: %w", part, err)
			}
			return uint32(v), nil
		}
		var err error
		switch f[0] {
		case "nop", "eol", "sackOK":
		case "mss", "wscale":
			o.Val, err = num(1)
		case "TS":
			if len(f) != 5 || f[1] != "val" || f[3] != "ecr" {
				return nil, fmt.Errorf("option %q: want TS val N ecr N", part)
			}
			if o.Val, err = num(2); err == nil {
				o.Ecr, err = num(4)
			}
		case "sack":
			for _, blk := range f[1:] {
				a, b, ok := strings.Cut(blk, ":")
				x, e1 := strconv.ParseUint(a, 10, 32)
				y, e2 := strconv.ParseUint(b, 10, 32)
				if !ok || e1 != nil || e2 != nil {
					return nil, fmt.Errorf("bad SACK block %q", blk)
				}
				o.Sacks = append(o.Sacks, [2]uint32{uint32(x), uint32(y)})
			}
		default:
			return nil, fmt.Errorf("unsupported TCP option %q", f[0])
		}
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// parseCall parses "name(args) = ret [ERRNO (text)]".
func parseCall(s string) (CallSpec, error) {
	var c CallSpec
	open := strings.Index(s, "(")
	if open < 0 {
		return c, fmt.Errorf("unsupported line %q", s)
	}
	c.Name = strings.TrimSpace(s[:open])
	depth, close := 0, -1
	for i := open; i < len(s) && close < 0; i++ {
		switch s[i] {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
			if depth == 0 {
				close = i
			}
		}
	}
	if close < 0 {
		return c, fmt.Errorf("unbalanced parentheses in %q", s)
	}
	c.Args = splitArgs(s[open+1 : close])
	rest := strings.TrimSpace(s[close+1:])
	if !strings.HasPrefix(rest, "=") {
		return c, fmt.Errorf("call %q: want = RESULT", s)
	}
	f := strings.Fields(strings.TrimSpace(rest[1:]))
	if len(f) == 0 {
		return c, fmt.Errorf("call %q: no result", s)
	}
	v, err := strconv.ParseInt(f[0], 0, 64)
	if err != nil {
		return c, fmt.Errorf("call %q: bad result %q", s, f[0])
	}
	c.Ret = v
	if len(f) > 1 {
		c.Errno = f[1]
	}
	return c, nil
}

func splitArgs(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if t := strings.TrimSpace(s[start:]); t != "" || len(out) > 0 {
		out = append(out, t)
	}
	return out
}
