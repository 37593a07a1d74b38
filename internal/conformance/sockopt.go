package conformance

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tungate/tungate/stack/tcp"
)

// Socket options and vectored calls.
//
// The engine has no per-socket option calls: the runner answers a
// setsockopt when the engine can be made to behave as the option asks, and
// otherwise skips the script with the reason (or, with --lenient, answers
// it with the script's own result and runs on). The answered options:
//
//   - SO_REUSEADDR, SO_REUSEPORT: there is no listening socket to bind, so
//     nothing to do.
//   - SO_LINGER {onoff=1, linger=0}: close aborts the connection with a RST
//     (the Conn's Abort), as RFC 9293 §3.10.4's ABORT; {onoff=0} is the
//     default. On the listening socket it holds for every accepted one.
//   - TCP_NODELAY, SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT:
//     the engine sets these for all its connections, so the runner sets
//     them from the start when the script sets them before any data moves;
//     set later, the socket would have behaved differently until then, and
//     the script is skipped in strict mode.
//
// getsockopt reads the kernel's own state (SO_ERROR, TCP_INFO, ...), which
// the runner does not model: skipped in strict mode, answered with the
// script's result with --lenient.
//
// recvmsg, readv, sendmsg and writev are read and write with the sum of
// their iovec lengths; with ancillary data (msg_control) they are skipped.

// engineSockopt is a setsockopt the runner applies engine-wide.
type engineSockopt struct {
	name  string
	apply func(o *tcp.Options, v int64)
}

// engineSockopts are the options the engine sets for all connections.
var engineSockopts = map[string]engineSockopt{
	"TCP_NODELAY":   {"TCP_NODELAY", func(o *tcp.Options, v int64) { o.TCB.NoDelay = v != 0 }},
	"SO_KEEPALIVE":  {"SO_KEEPALIVE", nil}, // applied with the TCP_KEEP* values, see keepalive
	"TCP_KEEPIDLE":  {"TCP_KEEPIDLE", func(o *tcp.Options, v int64) { o.TCB.KeepaliveIdle = time.Duration(v) * time.Second }},
	"TCP_KEEPINTVL": {"TCP_KEEPINTVL", func(o *tcp.Options, v int64) { o.TCB.KeepaliveInterval = time.Duration(v) * time.Second }},
	"TCP_KEEPCNT":   {"TCP_KEEPCNT", func(o *tcp.Options, v int64) { o.TCB.KeepaliveCount = int(v) }},
}

// wireSockopts change what goes on the wire, or when a call blocks
// (SO_SNDBUF), in ways the engine cannot follow, so a script that sets
// them is skipped even with --lenient:
// answering them would turn into failures that say nothing about the
// engine.
var wireSockopts = map[string]bool{"TCP_NOOPT": true, "TCP_MAXSEG": true, "TCP_CORK": true, "SO_SNDBUF": true}

// wireSendFlags are send flags of that kind.
var wireSendFlags = []string{"MSG_MORE", "MSG_EOR"}

// linuxKeepIdle is Linux's default TCP_KEEPIDLE (tcp_keepalive_time).
const linuxKeepIdle = 7200 * time.Second

// unansweredSockopts says why the runner cannot answer other options.
var unansweredSockopts = map[string]string{
	"SO_RCVBUF":         "the engine's receive buffer is set for all connections (the --recv_buf header flag), not per socket",
	"SO_SNDBUF":         "the engine's send buffer is set for all connections, not per socket",
	"TCP_MAXSEG":        "the engine's MSS follows its MTU (the --mtu header flag), not a socket option",
	"TCP_CONGESTION":    "congestion control is chosen for all connections (stack.custom.congestion_control)",
	"TCP_CORK":          "the engine has no corking",
	"TCP_NOOPT":         "the engine's TCP options are set for all connections (the --no_timestamps, --no_sack, --no_wscale header flags)",
	"TCP_NOTSENT_LOWAT": "the engine has no unsent-data low-water mark",
	"TCP_USER_TIMEOUT":  "the engine has no per-socket user timeout",
	"TCP_FASTOPEN":      "the engine does not implement TCP Fast Open",
	"TCP_DEFER_ACCEPT":  "the engine hands every connection over after its handshake",
	"TCP_QUICKACK":      "delayed ACKs are set for all connections (the --delayed_ack_ms header flag)",
	"SO_ZEROCOPY":       "the engine's Conn has no zero-copy send",
	"SO_TIMESTAMPING":   "the engine reports no socket timestamps",
	"TCP_INFO":          "TCP_INFO is the kernel's own statistics",
	"TCP_REPAIR":        "TCP repair mode is the kernel's",
}

// sockoptPlan is what a script's setsockopt calls ask of the engine.
type sockoptPlan struct {
	values    map[string]int64 // engine-wide option -> value
	keepalive bool             // SO_KEEPALIVE was set to 1
}

// apply configures the engine as the script's options ask.
func (p sockoptPlan) apply(o *tcp.Options) {
	for name, v := range p.values {
		if f := engineSockopts[name].apply; f != nil {
			f(o, v)
		}
	}
	if _, ok := p.values["SO_KEEPALIVE"]; !ok {
		return // the header flags decide
	}
	switch _, idle := p.values["TCP_KEEPIDLE"]; {
	case !p.keepalive:
		o.TCB.KeepaliveIdle = 0
	case !idle && o.TCB.KeepaliveIdle == 0:
		o.TCB.KeepaliveIdle = linuxKeepIdle
	}
}

// planSockopts reads the script's setsockopt calls: the engine-wide values
// to apply, and in strict mode the reason the script cannot run, if any.
func planSockopts(s *Script, lenient bool) (sockoptPlan, string) {
	p := sockoptPlan{values: map[string]int64{}}
	dataMoved := false
	for _, ev := range s.Events {
		if ev.Kind != Syscall {
			if ev.Kind == Inbound && ev.Seg.Len > 0 {
				dataMoved = true
			}
			continue
		}
		c := ev.Call
		switch c.Name {
		case "read", "recv", "recvfrom", "recvmsg", "readv", "write", "send", "sendto", "sendmsg", "writev":
			dataMoved = true
			args := strings.Join(c.Args, ",")
			for _, fl := range wireSendFlags {
				if strings.Contains(args, fl) {
					return p, fmt.Sprintf("line %d: %s with %s: the engine has no corking or record boundaries, so what it sends would differ for that reason alone", ev.Line, c.Name, fl)
				}
			}
			continue
		case "getsockopt":
			if lenient {
				continue
			}
			name := argAt(c, 2)
			why := unansweredSockopts[name]
			if why == "" {
				why = "it reads the kernel's socket state, which the runner does not model"
			}
			return p, fmt.Sprintf("line %d: getsockopt %s: %s (run with --lenient to ignore it)", ev.Line, name, why)
		case "setsockopt":
		default:
			continue
		}
		name := argAt(c, 2)
		if wireSockopts[name] {
			why := unansweredSockopts[name]
			if why == "" {
				why = "the engine has no equivalent"
			}
			return p, fmt.Sprintf("line %d: setsockopt %s: %s, and it changes what is sent, so the script is skipped even with --lenient", ev.Line, name, why)
		}
		reason := ""
		switch name {
		case "SO_REUSEADDR", "SO_REUSEPORT":
		case "SO_LINGER":
			if _, ok := lingerAbort(argAt(c, 3)); !ok {
				reason = fmt.Sprintf("SO_LINGER %s: only {onoff=0} and {onoff=1, linger=0} (close aborts) have an engine equivalent", argAt(c, 3))
			}
		default:
			if _, ok := engineSockopts[name]; !ok {
				why := unansweredSockopts[name]
				if why == "" {
					why = "no engine equivalent"
				}
				reason = name + ": " + why
				break
			}
			v, err := optInt(argAt(c, 3))
			if err != nil {
				reason = fmt.Sprintf("%s: value %q: %v", name, argAt(c, 3), err)
				break
			}
			if old, ok := p.values[name]; (ok && old != v) || dataMoved {
				reason = fmt.Sprintf("%s set after data moved (or changed): the engine sets it for all connections from the start", name)
			}
			if name == "SO_KEEPALIVE" {
				p.keepalive = v != 0
			}
			p.values[name] = v
		}
		if reason != "" && !lenient {
			return p, fmt.Sprintf("line %d: setsockopt %s (run with --lenient to ignore it)", ev.Line, reason)
		}
	}
	return p, ""
}

// argAt returns c's i-th argument, or "".
func argAt(c CallSpec, i int) string {
	if i < len(c.Args) {
		return c.Args[i]
	}
	return ""
}

// optInt reads an option value written as [N] or N.
func optInt(s string) (int64, error) {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "["), "]")
	return strconv.ParseInt(strings.TrimSpace(s), 0, 64)
}

var lingerRE = regexp.MustCompile(`^\{\s*onoff\s*=\s*(\d+)\s*,\s*linger\s*=\s*(\d+)\s*\}$`)

// lingerAbort reads an SO_LINGER value: abort is true for {onoff=1,
// linger=0}; ok is false for a value the engine cannot honour (a close
// that lingers for a time).
func lingerAbort(v string) (abort, ok bool) {
	m := lingerRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return false, false
	}
	switch {
	case m[1] == "0":
		return false, true
	case m[2] == "0":
		return true, true
	}
	return false, false
}

// vectorCall rewrites recvmsg, readv, sendmsg and writev in place as recv
// or send of the sum of their iovec lengths (flags kept for recv), and
// returns why it cannot when it cannot.
func vectorCall(c *CallSpec) string {
	var iov, flags string
	var name string
	switch c.Name {
	case "recvmsg", "sendmsg":
		msg := argAt(*c, 1)
		if strings.Contains(msg, "msg_control") {
			return c.Name + " with ancillary data (msg_control) has no engine equivalent"
		}
		i := strings.Index(msg, "msg_iov")
		if i < 0 {
			return c.Name + " without msg_iov"
		}
		iov, flags = msg[i:], argAt(*c, 2)
		name = map[string]string{"recvmsg": "recv", "sendmsg": "send"}[c.Name]
	case "readv", "writev":
		iov = argAt(*c, 1)
		name = map[string]string{"readv": "recv", "writev": "send"}[c.Name]
	default:
		return ""
	}
	total, err := iovLen(iov)
	if err != nil {
		return fmt.Sprintf("%s: %v", c.Name, err)
	}
	c.Name = name
	c.Args = []string{argAt(*c, 0), "...", strconv.FormatInt(total, 10), flags}
	return ""
}

var iovRE = regexp.MustCompile(`\{[^{}]*,\s*(\d+)\s*\}`)

// iovLen sums the lengths of an iovec list, [{..., N}, {..., M}].
func iovLen(s string) (int64, error) {
	var total int64
	ms := iovRE.FindAllStringSubmatch(s, -1)
	if len(ms) == 0 {
		return 0, fmt.Errorf("no iovec in %q", s)
	}
	for _, m := range ms {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// boundNotListening returns the line of a bind() in a script that never
// calls listen(), 0 if there is none.
func boundNotListening(s *Script) int {
	bind := 0
	for _, ev := range s.Events {
		if ev.Kind != Syscall {
			continue
		}
		switch ev.Call.Name {
		case "listen":
			return 0
		case "bind":
			if bind == 0 {
				bind = ev.Line
			}
		}
	}
	return bind
}
