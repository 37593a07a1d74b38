package tcp

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// The fuzz targets play the app side of one or two connections from a
// byte string. The string starts with two header bytes (the SYN options
// of each flow and a few tunables), then holds records:
//
//	op&3 == 0  arbitrary segment: flags, seq offset (int16, from the
//	           RCV.NXT the engine last announced), ack offset (int16, from
//	           the highest sequence the engine sent), window byte, option
//	           selector (+ SACK blocks, + raw option bytes), payload/8,
//	           time advance
//	op&3 == 1  well-formed segment at the app's next sequence number
//	           acknowledging everything: bits (FIN, PSH, no TS, dup ACK,
//	           zero window, SACK, fill the window exactly), payload/8,
//	           time advance
//	op&3 == 2  app action on the Conn: (op>>3)&7 selects Write, Read,
//	           CloseWrite, Close, Abort, CloseRead, Read, Read; one
//	           argument byte
//	op&3 == 3  time advance only
//
// bit 2 of op selects the flow. Bit 6 of a segment's op holds it back so
// that it reaches the engine in one DeliverInbound call with the segments
// that follow, as a TUN read batch does (up to 16; a SYN ends a batch). Every segment the engine emits is checked
// against what the app side sent and what the application wrote.

const (
	fzSeg = iota
	fzQuick
	fzApp
	fzWait
)

// App actions.
const (
	fzWrite = iota
	fzRead
	fzCloseWrite
	fzClose
	fzAbort
	fzCloseRead
)

// fzMaxSteps bounds one input so that an iteration stays cheap.
const fzMaxSteps = 256

type fzReader struct {
	b []byte
	i int
}

func (r *fzReader) done() bool { return r.i >= len(r.b) }

func (r *fzReader) u8() byte {
	if r.i >= len(r.b) {
		r.i++
		return 0
	}
	v := r.b[r.i]
	r.i++
	return v
}

func (r *fzReader) i16() int16 { return int16(uint16(r.u8())<<8 | uint16(r.u8())) }

func (r *fzReader) bytes(n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = r.u8()
	}
	return out
}

// fzStep is one decoded record.
type fzStep struct {
	kind           byte
	flow           int
	flags          packet.TCPFlags
	seqOff, ackOff int16
	wnd            uint16
	opt, bits      byte
	sack           [4][2]byte
	nsack          int
	raw            []byte
	plen           int
	adv            time.Duration
	action, arg    byte
	hold           bool // deliver with the next segment
	flush          bool // deliver the held segments (end of input)
}

func (s fzStep) String() string {
	held := ""
	if s.hold {
		held = " (held)"
	}
	switch s.kind {
	case fzSeg:
		return fmt.Sprintf("seg flow=%d %v seq%+d ack%+d wnd=%d opt=%#x sack=%d raw=%x len=%d adv=%v%s",
			s.flow, s.flags, s.seqOff, s.ackOff, s.wnd, s.opt, s.nsack, s.raw, s.plen, s.adv, held)
	case fzQuick:
		return fmt.Sprintf("quick flow=%d bits=%#x len=%d adv=%v%s", s.flow, s.bits, s.plen, s.adv, held)
	case fzApp:
		name := [...]string{"Write", "Read", "CloseWrite", "Close", "Abort", "CloseRead", "Read", "Read"}[s.action]
		return fmt.Sprintf("app flow=%d %s(%d)", s.flow, name, s.arg)
	}
	return fmt.Sprintf("wait %v", s.adv)
}

// fzAdvance decodes a time advance: six bits of count, two of unit.
func fzAdvance(b byte) time.Duration {
	unit := [...]time.Duration{time.Millisecond, 25 * time.Millisecond, time.Second, time.Minute}[b>>6]
	return time.Duration(b&0x3f) * unit
}

func fzDecode(r *fzReader) fzStep {
	op := r.u8()
	st := fzStep{kind: op & 3, flow: int(op>>2) & 1}
	st.hold = st.kind <= fzQuick && op&0x40 != 0
	switch st.kind {
	case fzSeg:
		st.flags = packet.TCPFlags(r.u8() & 0x3f)
		st.seqOff, st.ackOff = r.i16(), r.i16()
		w := r.u8()
		st.wnd = uint16(w)<<8 | uint16(w)
		st.opt = r.u8()
		if st.opt&0x08 != 0 {
			st.nsack = 1 + int(st.opt>>4)&3
			for i := range st.nsack {
				st.sack[i] = [2]byte{r.u8(), r.u8()}
			}
		}
		if st.opt&0x80 != 0 {
			st.raw = r.bytes(int(r.u8()) % (packet.TCPMaxOptionsLen + 1))
		}
		st.plen = int(r.u8()) * 8
		st.adv = fzAdvance(r.u8())
	case fzQuick:
		st.bits = r.u8()
		st.plen = int(r.u8()) * 8
		st.adv = fzAdvance(r.u8())
	case fzApp:
		st.action = (op >> 3) & 7
		st.arg = r.u8()
	case fzWait:
		st.adv = fzAdvance(r.u8())
	}
	return st
}

// fzInByte is the byte the app side sends at sequence number s, so that
// every copy of it, retransmitted or reordered, carries the same data.
func fzInByte(s Seq) byte { return byte(uint32(s)*2246822519>>24) ^ byte(s) }

// fzOutByte is the byte the application writes at stream offset o.
func fzOutByte(o uint64) byte { return byte(uint32(o)*2654435761>>24) ^ byte(o) }

// fzSynOpts are the SYN options bits b select: MSS, window scale, SACK,
// timestamps.
func fzSynOpts(b byte, tsval uint32) packet.TCPOptions {
	var o packet.TCPOptions
	if b&1 != 0 {
		o.HasMSS, o.MSS = true, 1400
	}
	if b&2 != 0 {
		o.HasWScale, o.WScale = true, 7
	}
	o.SACKPermitted = b&4 != 0
	if b&8 != 0 {
		o.HasTS, o.TSVal = true, tsval
	}
	return o
}

// fzConfig applies the tunables of the second header byte.
func fzConfig(c *Config, b byte) {
	c.NoDelay = b&0x02 != 0
	if b&0x04 != 0 {
		c.DelayedAck = -1
	}
	if b&0x08 != 0 {
		c.KeepaliveIdle, c.KeepaliveInterval, c.KeepaliveCount = 10*time.Second, time.Second, 3
	}
	if b&0x10 != 0 {
		c.CongestionControl = "newreno"
	}
	if b&0x20 != 0 {
		c.RecvBufSize, c.RecvBufMax, c.SendBufSize = 4096, 8192, 8192
	}
	c.MSL2, c.FinWait2Timeout = 30*time.Second, 20*time.Second
}

// fzEnc writes records in the fuzz input format.
type fzEnc struct {
	b    []byte
	last int // offset of the last record's op
}

func fzInput(synOpts, tunables byte) *fzEnc { return &fzEnc{b: []byte{synOpts, tunables}} }

func (e *fzEnc) seg(flow int, flags packet.TCPFlags, seqOff, ackOff int16, wnd, opt byte, plen8, adv byte) *fzEnc {
	e.last = len(e.b)
	e.b = append(e.b, byte(fzSeg|flow<<2), byte(flags), byte(uint16(seqOff)>>8), byte(seqOff),
		byte(uint16(ackOff)>>8), byte(ackOff), wnd, opt)
	if opt&0x08 != 0 {
		for range 1 + int(opt>>4)&3 {
			e.b = append(e.b, 4, 40)
		}
	}
	if opt&0x80 != 0 {
		e.b = append(e.b, 8, 2, 4, 5, 180, 1, 1, 8, 0x0a) // MSS 1460 (4 bytes: kind 2 len 4 ...), NOPs, truncated TS
	}
	e.b = append(e.b, plen8, adv)
	return e
}

func (e *fzEnc) quick(flow int, bits, plen8, adv byte) *fzEnc {
	e.last = len(e.b)
	e.b = append(e.b, byte(fzQuick|flow<<2), bits, plen8, adv)
	return e
}

// held marks the last segment to be delivered with the next one.
func (e *fzEnc) held() *fzEnc {
	e.b[e.last] |= 0x40
	return e
}

func (e *fzEnc) app(flow int, action, arg byte) *fzEnc {
	e.b = append(e.b, byte(fzApp|flow<<2|int(action)<<3), arg)
	return e
}

func (e *fzEnc) wait(adv byte) *fzEnc {
	e.b = append(e.b, fzWait, adv)
	return e
}

// Time advance bytes.
const (
	fzMs   = 0x00 // + count: milliseconds
	fzMs25 = 0x40 // 25 ms units
	fzSec  = 0x80
	fzMin  = 0xc0
)

// fzSeeds cover the paths the fuzzer should start from: bulk data both
// ways, both closes, TIME-WAIT and its reuse, loss and recovery, zero
// windows, RFC 5961 segments, garbage options and an IPv6 flow.
func fzSeeds() [][]byte {
	const all = 0xff // every SYN option on both flows
	const ack = packet.ACK
	var seeds []*fzEnc
	// Data both ways, then our active close to TIME-WAIT and its end.
	seeds = append(seeds, fzInput(all, 0).
		app(0, fzWrite, 40).quick(0, 0, 0, fzMs+1).
		quick(0, 0x02, 150, fzMs+1).app(0, fzRead, 255).
		app(0, fzClose, 0).quick(0, 0x01, 0, fzMs+5).wait(fzMin+1))
	// Passive close: the app's FIN, EOF, our FIN, LAST-ACK, CLOSED.
	seeds = append(seeds, fzInput(all, 0x40).
		quick(0, 0x01, 10, 0).app(0, fzRead, 255).app(0, fzRead, 0).
		app(0, fzWrite, 3).app(0, fzClose, 0).quick(0, 0, 0, fzMs+1))
	// Out-of-order data with SACK, then the hole filled.
	seeds = append(seeds, fzInput(all, 0).
		seg(0, ack|packet.PSH, 1448, 0, 0xff, 0x01, 181, 0).
		seg(0, ack|packet.PSH, 2896, 0, 0xff, 0x01, 181, 0).
		quick(0, 0x02, 181, 0).app(0, fzRead, 255).app(0, fzRead, 255))
	// Loss on our side: RTO, fast retransmit with dup ACKs and SACK.
	seeds = append(seeds, fzInput(all, 0x02).
		app(0, fzWrite, 255).app(0, fzWrite, 255).
		quick(0, 0x28, 0, fzMs+1).quick(0, 0x28, 0, fzMs+1).quick(0, 0x28, 0, fzMs+1).
		quick(0, 0x28, 0, fzMs+1).wait(fzSec+2).quick(0, 0, 0, fzMs+1).wait(fzSec+5).quick(0, 0, 0, 0))
	// Retransmissions until the connection gives up.
	seeds = append(seeds, fzInput(0x00, 0x10).
		app(0, fzWrite, 7).wait(fzMin+2).wait(fzMin+10).wait(fzMin+30).wait(fzMin+60).wait(fzMin+60))
	// Zero window, persist probes, window opens; small buffers.
	seeds = append(seeds, fzInput(all, 0x20).
		app(0, fzWrite, 127).quick(0, 0x10, 0, fzSec+1).wait(fzSec+3).wait(fzSec+10).
		quick(0, 0, 0, fzMs+1).quick(0, 0x10, 60, 0).app(0, fzRead, 3).quick(0, 0, 0, 0))
	// RFC 5961: RST in window, SYN in ESTABLISHED, ACK of unsent data,
	// old segment, exact RST.
	seeds = append(seeds, fzInput(all, 0).
		seg(0, packet.RST, 10, 0, 0, 0, 0, 0).
		seg(0, packet.SYN, 5, 0, 0xff, 0x01, 0, 0).
		seg(0, ack, 0, 5000, 0xff, 0x01, 0, 0).
		seg(0, ack, -3000, 0, 0xff, 0x01, 2, 0).
		seg(0, ack, 0, 0, 0xff, 0x03, 0, 0).
		seg(0, packet.RST, 0, 0, 0, 0, 0, 0))
	// Simultaneous close through CLOSING, then TIME-WAIT reused by a SYN
	// (the app closed its Conn: only then is TIME-WAIT reused).
	seeds = append(seeds, fzInput(all, 0).
		app(0, fzClose, 0).seg(0, ack|packet.FIN, 0, -1, 0xff, 0x01, 0, fzMs+1).
		quick(0, 0, 0, fzMs+1).seg(0, packet.SYN, 100, 0, 0xff, 0x41, 0, fzMs+1).
		quick(0, 0, 0, 0).app(0, fzWrite, 1).quick(0, 0, 0, 0))
	// Keepalive probes on an idle connection, then timeout.
	seeds = append(seeds, fzInput(0x0f, 0x08).wait(fzSec+11).quick(0, 0, 0, 0).wait(fzSec+11).wait(fzSec+2).wait(fzSec+2).wait(fzSec+2))
	// Two flows, IPv6 second, data interleaved; garbage options.
	seeds = append(seeds, fzInput(all, 0x41).
		app(1, fzWrite, 100).quick(1, 0x02, 100, 0).app(1, fzRead, 255).
		seg(0, ack|packet.PSH, 100, 0, 0xff, 0x80, 10, 0).
		seg(1, ack, 0, 0, 0xff, 0x89, 0, 0).
		app(0, fzAbort, 0).quick(0, 0, 1, 0).app(1, fzClose, 0).quick(1, 0x01, 0, fzMs+1))
	// TUN read batches: in-order bursts, a hole filled within a batch,
	// data and FIN together, segments of both flows mixed.
	seeds = append(seeds, fzInput(all, 0x01).
		quick(0, 0x02, 181, 0).held().quick(0, 0x02, 181, 0).held().quick(0, 0x02, 181, 0).
		app(0, fzRead, 255).app(0, fzWrite, 40).
		seg(0, ack|packet.PSH, 1448, 0, 0xff, 0x01, 181, 0).held().quick(1, 0x02, 20, 0).held().
		quick(0, 0x02, 181, 0).held().quick(0, 0x03, 10, 0).
		app(0, fzRead, 255).app(0, fzRead, 255).app(1, fzRead, 255).wait(fzMs25+2))
	// No options at all, Nagle, delayed ACKs, FIN-WAIT-2 timeout.
	seeds = append(seeds, fzInput(0, 0x00).
		app(0, fzWrite, 2).app(0, fzWrite, 2).quick(0, 0, 0, fzMs25+2).quick(0, 0x02, 1, fzMs25+2).
		app(0, fzRead, 0).app(0, fzClose, 0).quick(0, 0, 0, fzSec+30))
	// Half-close both ways, CloseRead, unread data reset on Close.
	seeds = append(seeds, fzInput(all, 0x44).
		app(0, fzCloseWrite, 0).quick(0, 0, 20, 0).app(0, fzCloseRead, 0).quick(0, 0, 20, 0).
		quick(0, 0x01, 0, 0).wait(fzMin+1))
	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = s.b
	}
	return out
}

func FuzzEngineInput(f *testing.F) {
	for _, s := range fzSeeds() {
		f.Add(s)
	}
	f.Fuzz(runEngineFuzz)
}

func FuzzTCBInput(f *testing.F) {
	for _, s := range fzSeeds() {
		f.Add(s)
	}
	f.Fuzz(runTCBFuzz)
}

// The seeds are where the fuzzer starts; they must keep reaching the
// states and recovery paths they were written for as the code changes.
func TestFuzzSeeds_ReachEveryStateAndRecoveryPath(t *testing.T) {
	var engVisited, tcbVisited [TimeWait + 1]bool
	var eng Stats
	var tcb Counters
	for _, s := range fzSeeds() {
		h := engineFuzz(t, s)
		for _, p := range h.peer {
			for st, ok := range p.visited {
				engVisited[st] = engVisited[st] || ok
			}
		}
		v := reflect.ValueOf(&eng).Elem()
		w := reflect.ValueOf(h.prev)
		for i := range v.NumField() {
			if v.Field(i).Kind() == reflect.Uint64 {
				v.Field(i).SetUint(v.Field(i).Uint() + w.Field(i).Uint())
			}
		}
		p, c := tcbFuzz(t, s)
		for st, ok := range p.visited {
			tcbVisited[st] = tcbVisited[st] || ok
		}
		tcb.Retransmits.Add(c.Retransmits.Load())
		tcb.FastRetransmits.Add(c.FastRetransmits.Load())
		tcb.PersistProbes.Add(c.PersistProbes.Load())
	}
	for st := SynReceived; st <= TimeWait; st++ {
		if !engVisited[st] {
			t.Errorf("no engine seed reaches %v", st)
		}
		if !tcbVisited[st] {
			t.Errorf("no TCB seed reaches %v", st)
		}
	}
	if !engVisited[Closed] || !tcbVisited[Closed] {
		t.Errorf("no seed reaches CLOSED")
	}
	for name, n := range map[string]uint64{
		"Retransmits": eng.Retransmits, "FastRetransmits": eng.FastRetransmits, "RTOs": eng.RTOs,
		"PersistProbes": eng.PersistProbes, "KeepalivesSent": eng.KeepalivesSent, "ChallengeAcks": eng.ChallengeAcks,
		"OutOfOrder": eng.OutOfOrder, "TimeWaitReuses": eng.TimeWaitReuses, "Timeouts": eng.Timeouts,
		"RSTsReceived": eng.RSTsReceived, "RSTsSent": eng.RSTsSent, "DupAcks": eng.DupAcks,
		"TCB Retransmits": tcb.Retransmits.Load(), "TCB FastRetransmits": tcb.FastRetransmits.Load(),
		"TCB PersistProbes": tcb.PersistProbes.Load(),
	} {
		if n == 0 {
			t.Errorf("no seed exercises %s", name)
		}
	}
}

// Found by FuzzTCBInput. A FIN right at the right edge of the window is
// kept (input.go trim: "it needs no buffer"), so onFIN moves RCV.NXT one
// past RCV.NXT+RCV.WND and rcvWnd() = RCV.ADV - RCV.NXT wraps to 2^32-1.
// The ACK of the FIN then announces 65535 << shift although the buffer is
// full, and every later segment passes the acceptability test of RFC 9293
// §3.10.7.4 whatever its sequence number, instead of being dropped with
// an ACK.
func TestCloseWait_FINAtTheWindowEdgeLeavesTheWindowClosed(t *testing.T) {
	h := established(t, func(c *Config) { c.RecvBufSize, c.RecvBufMax = 4096, 4096 })
	seg := h.data(pattern(0, 4096)) // exactly the window the SYN-ACK offered
	seg.Flags |= packet.FIN
	h.peerNxt = h.peerNxt.Add(1)
	h.in(seg)
	h.wantState(CloseWait)
	if a := h.one(); a.Ack != h.peerNxt || a.Wnd != 0 {
		t.Fatalf("ACK of the FIN: %v; want ack %d with window 0 (buffer full, nothing read)", a.String(), h.peerNxt)
	}
	far := h.ack()
	far.Seq = far.Seq.Add(1 << 30)
	far.Payload = []byte("x")
	h.in(far)
	wantAck(t, h.one(), h.peerNxt)
	h.wantDrop(dropOutOfWindow)
}
