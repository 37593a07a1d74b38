package conformance

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// parseFlags turns a script's flag letters into header bits.
func parseFlags(s string) packet.TCPFlags {
	var f packet.TCPFlags
	for _, c := range s {
		switch c {
		case 'S':
			f |= packet.SYN
		case 'F':
			f |= packet.FIN
		case 'R':
			f |= packet.RST
		case 'P':
			f |= packet.PSH
		case '.':
			f |= packet.ACK
		case 'E':
			f |= packet.ECE
		case 'W':
			f |= packet.CWR
		case 'U':
			f |= packet.URG
		}
	}
	return f
}

// rawOptions walks an options area into the script's option list form,
// NOPs and EOLs included, so order can be compared.
func rawOptions(b []byte) []Option {
	var out []Option
	for len(b) > 0 {
		kind := b[0]
		if kind == packet.TCPOptEOL {
			out = append(out, Option{Kind: "eol"})
			b = b[1:]
			continue
		}
		if kind == packet.TCPOptNOP {
			out = append(out, Option{Kind: "nop"})
			b = b[1:]
			continue
		}
		if len(b) < 2 || int(b[1]) < 2 || int(b[1]) > len(b) {
			return append(out, Option{Kind: fmt.Sprintf("malformed(%d)", kind)})
		}
		v := b[2:b[1]]
		b = b[b[1]:]
		switch {
		case kind == packet.TCPOptMSS && len(v) == 2:
			out = append(out, Option{Kind: "mss", Val: uint32(binary.BigEndian.Uint16(v))})
		case kind == packet.TCPOptWScale && len(v) == 1:
			out = append(out, Option{Kind: "wscale", Val: uint32(v[0])})
		case kind == packet.TCPOptSACKPermitted && len(v) == 0:
			out = append(out, Option{Kind: "sackOK"})
		case kind == packet.TCPOptTimestamp && len(v) == 8:
			out = append(out, Option{Kind: "TS", Val: binary.BigEndian.Uint32(v), Ecr: binary.BigEndian.Uint32(v[4:])})
		case kind == packet.TCPOptSACK && len(v)%8 == 0:
			o := Option{Kind: "sack"}
			for i := 0; i < len(v); i += 8 {
				o.Sacks = append(o.Sacks, [2]uint32{binary.BigEndian.Uint32(v[i:]), binary.BigEndian.Uint32(v[i+4:])})
			}
			out = append(out, o)
		default:
			out = append(out, Option{Kind: fmt.Sprintf("kind%d", kind)})
		}
	}
	return out
}

// encodeOptions writes a script's option list in the script's order,
// padded with EOL to a multiple of 4.
func encodeOptions(opts []Option) []byte {
	var b []byte
	for _, o := range opts {
		switch o.Kind {
		case "nop":
			b = append(b, packet.TCPOptNOP)
		case "eol":
			b = append(b, packet.TCPOptEOL)
		case "mss":
			b = append(b, packet.TCPOptMSS, 4, byte(o.Val>>8), byte(o.Val))
		case "wscale":
			b = append(b, packet.TCPOptWScale, 3, byte(o.Val))
		case "sackOK":
			b = append(b, packet.TCPOptSACKPermitted, 2)
		case "TS":
			b = append(b, packet.TCPOptTimestamp, 10)
			b = binary.BigEndian.AppendUint32(b, o.Val)
			b = binary.BigEndian.AppendUint32(b, o.Ecr)
		case "sack":
			b = append(b, packet.TCPOptSACK, byte(2+8*len(o.Sacks)))
			for _, s := range o.Sacks {
				b = binary.BigEndian.AppendUint32(b, s[0])
				b = binary.BigEndian.AppendUint32(b, s[1])
			}
		}
	}
	for len(b)%4 != 0 {
		b = append(b, packet.TCPOptEOL)
	}
	return b
}

func formatOptions(opts []Option) string {
	parts := make([]string, 0, len(opts))
	for _, o := range opts {
		switch o.Kind {
		case "mss", "wscale":
			parts = append(parts, fmt.Sprintf("%s %d", o.Kind, o.Val))
		case "TS":
			parts = append(parts, fmt.Sprintf("TS val %d ecr %d", o.Val, o.Ecr))
		case "sack":
			s := "sack"
			for _, b := range o.Sacks {
				s += fmt.Sprintf(" %d:%d", b[0], b[1])
			}
			parts = append(parts, s)
		default:
			parts = append(parts, o.Kind)
		}
	}
	return "<" + strings.Join(parts, ",") + ">"
}

// bases are the offsets between a script's relative numbers and the wire.
type bases struct {
	local, remote uint32 // ISNs: ours learnt from the SYN-ACK; the peer's from --remote_isn
	localKnown    bool
	tsLocal       uint32 // our TSval minus the script's
	tsKnown       bool
}

// describe formats a segment the engine sent in script terms.
func (b *bases) describe(s sent) string {
	opts := b.scriptView(rawOptions(s.rawOpts))
	seq := s.seq - b.local
	str := fmt.Sprintf("%s %d:%d(%d)", flagString(s.flags), seq, seq+uint32(s.dataLen), s.dataLen)
	if s.flags&packet.ACK != 0 {
		str += fmt.Sprintf(" ack %d", s.ack-b.remote)
	}
	str += fmt.Sprintf(" win %d", s.wnd)
	if len(opts) > 0 {
		str += " " + formatOptions(opts)
	}
	return str
}

// flagString prints flags in the order scripts write them (S F R P .).
func flagString(f packet.TCPFlags) string {
	var s string
	for _, x := range []struct {
		bit packet.TCPFlags
		c   string
	}{{packet.SYN, "S"}, {packet.FIN, "F"}, {packet.RST, "R"}, {packet.PSH, "P"}, {packet.ACK, "."}, {packet.URG, "U"}, {packet.ECE, "E"}, {packet.CWR, "W"}} {
		if f&x.bit != 0 {
			s += x.c
		}
	}
	return s
}

// checkSegment compares what the engine sent with what the script
// expects and returns the differences; it learns our ISN and TS offset
// from the first segments that carry them.
func (b *bases) checkSegment(want SegSpec, got sent, lenient bool, tol time.Duration) []string {
	var diffs []string
	// Whether to set PSH is the sender's choice (RFC 9293 §3.9.1.2,
	// MAY-15, SHLD-27): scripts from other stacks are not held to theirs.
	ignore := packet.TCPFlags(0)
	if lenient {
		ignore = packet.PSH
	}
	if wf := parseFlags(want.Flags); wf&^ignore != got.flags&^ignore {
		diffs = append(diffs, fmt.Sprintf("flags %s, want %s", flagString(got.flags), want.Flags))
	}
	if !b.localKnown && got.flags&packet.SYN != 0 {
		b.local, b.localKnown = got.seq-want.Seq, true
	}
	if seq := got.seq - b.local; seq != want.Seq {
		diffs = append(diffs, fmt.Sprintf("seq %d, want %d", seq, want.Seq))
	}
	if uint32(got.dataLen) != want.Len {
		diffs = append(diffs, fmt.Sprintf("payload %d bytes, want %d", got.dataLen, want.Len))
	}
	if want.HasAck {
		if ack := got.ack - b.remote; ack != want.Ack || got.flags&packet.ACK == 0 {
			diffs = append(diffs, fmt.Sprintf("ack %d, want %d", ack, want.Ack))
		}
	}
	if want.HasWin && !lenient && uint32(got.wnd) != want.Win {
		diffs = append(diffs, fmt.Sprintf("win %d, want %d", got.wnd, want.Win))
	}
	gotOpts := rawOptions(got.rawOpts)
	for _, o := range gotOpts {
		if o.Kind == "TS" && !b.tsKnown {
			for _, w := range want.Opts {
				if w.Kind == "TS" {
					b.tsLocal, b.tsKnown = o.Val-w.Val, true
				}
			}
		}
	}
	if want.AnyOpts {
		return diffs
	}
	if lenient {
		return append(diffs, b.checkOptionsLenient(want.Opts, gotOpts)...)
	}
	return append(diffs, b.checkOptionsStrict(want.Opts, gotOpts, tol)...)
}

func (b *bases) optionMismatch(w, g Option, strict bool, tol time.Duration) string {
	switch w.Kind {
	case "mss", "wscale":
		if strict && w.Val != g.Val {
			return fmt.Sprintf("%s %d, want %d", w.Kind, g.Val, w.Val)
		}
	case "TS":
		if g.Ecr != w.Ecr && !(w.Ecr == 0 && g.Ecr == 0) {
			// Scripts echo the peer's own TSval, which needs no rebasing.
			return fmt.Sprintf("TS ecr %d, want %d", g.Ecr, w.Ecr)
		}
		if strict {
			d := int64(int32(g.Val - b.tsLocal - w.Val))
			if d < 0 {
				d = -d
			}
			if time.Duration(d)*time.Millisecond > tol+time.Millisecond {
				return fmt.Sprintf("TS val %d, want %d", g.Val-b.tsLocal, w.Val)
			}
		}
	case "sack":
		if len(g.Sacks) != len(w.Sacks) {
			return fmt.Sprintf("%d SACK blocks, want %d", len(g.Sacks), len(w.Sacks))
		}
		for i := range w.Sacks {
			gs := [2]uint32{g.Sacks[i][0] - b.remote, g.Sacks[i][1] - b.remote}
			if gs != w.Sacks[i] {
				return fmt.Sprintf("SACK block %d is %d:%d, want %d:%d", i, gs[0], gs[1], w.Sacks[i][0], w.Sacks[i][1])
			}
		}
	}
	return ""
}

func (b *bases) checkOptionsStrict(want, got []Option, tol time.Duration) []string {
	if len(want) != len(got) {
		return []string{fmt.Sprintf("options %s, want %s", formatOptions(b.scriptView(got)), formatOptions(want))}
	}
	for i := range want {
		if want[i].Kind != got[i].Kind {
			return []string{fmt.Sprintf("options %s, want %s", formatOptions(b.scriptView(got)), formatOptions(want))}
		}
		if m := b.optionMismatch(want[i], got[i], true, tol); m != "" {
			return []string{m}
		}
	}
	return nil
}

// checkOptionsLenient checks only the options the script names, in any
// order, ignoring MSS and window-scale values and TSvals; SACK blocks
// and TSecr still count.
func (b *bases) checkOptionsLenient(want, got []Option) []string {
	var diffs []string
	for _, w := range want {
		if w.Kind == "nop" || w.Kind == "eol" {
			continue
		}
		found := false
		for _, g := range got {
			if g.Kind == w.Kind {
				found = true
				if m := b.optionMismatch(w, g, false, 0); m != "" {
					diffs = append(diffs, m)
				}
				break
			}
		}
		if !found {
			diffs = append(diffs, fmt.Sprintf("no %s option", w.Kind))
		}
	}
	for _, g := range got {
		if g.Kind == "sack" && !hasKind(want, "sack") {
			diffs = append(diffs, "unexpected SACK blocks "+formatOptions([]Option{b.scriptView([]Option{g})[0]}))
		}
	}
	return diffs
}

func hasKind(opts []Option, kind string) bool {
	for _, o := range opts {
		if o.Kind == kind {
			return true
		}
	}
	return false
}

// scriptView rebases sent options into script numbers for messages.
func (b *bases) scriptView(opts []Option) []Option {
	out := make([]Option, len(opts))
	for i, o := range opts {
		o.Sacks = append([][2]uint32(nil), o.Sacks...)
		if o.Kind == "TS" {
			o.Val -= b.tsLocal
		}
		for j := range o.Sacks {
			o.Sacks[j][0] -= b.remote
			o.Sacks[j][1] -= b.remote
		}
		out[i] = o
	}
	return out
}
