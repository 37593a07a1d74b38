package tcp

import (
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

// counterValues snapshots every counter.
func counterValues(c *Counters) []uint64 {
	v := reflect.ValueOf(c).Elem()
	out := make([]uint64, v.NumField())
	for i := range out {
		out[i] = v.Field(i).Addr().Interface().(*atomic.Uint64).Load()
	}
	return out
}

// observe is what a TIME-WAIT scenario can tell apart: everything sent,
// the state, the deadline, the error, the last drop and every counter.
func observe(h *harness) string {
	return fmt.Sprintf("out %v state %v deadline %v err %v reason %q drop %q counters %v",
		segsString(h.take()), h.tcb.State(), h.tcb.Deadline().Sub(t0), h.tcb.Err(), h.tcb.Reason(), h.lastDrop(), counterValues(&h.stats))
}

// A frozen TIME-WAIT record, thawed, must behave exactly as the TCB it
// was taken from: every scenario runs on both and every observation
// must match.
func TestTimeWait_ThawedRecordBehavesAsTheTCB(t *testing.T) {
	paths := map[string]func(*testing.T, ...func(*Config)) *harness{
		"FIN-WAIT-2": timeWait,
		"CLOSING": func(t *testing.T, mod ...func(*Config)) *harness {
			h := closing(t, mod...)
			h.in(h.ack())
			h.wantState(TimeWait)
			return h
		},
		"FIN-WAIT-2, after challenge ACKs": func(t *testing.T, mod ...func(*Config)) *harness {
			h := timeWait(t, mod...)
			for range 6 {
				syn := h.peerSyn()
				syn.Seq = h.peerNxt
				h.in(syn)
			}
			return h
		},
		"FIN-WAIT-1, FIN acking ours": func(t *testing.T, mod ...func(*Config)) *harness {
			h := finWait1(t, mod...)
			h.in(h.fin())
			h.wantState(TimeWait)
			return h
		},
	}
	options := map[string]func(*Config){
		"all options":     func(*Config) {},
		"no timestamps":   func(c *Config) { c.Timestamps = false },
		"no SACK, no WS":  func(c *Config) { c.SACK, c.WindowScale = false, false },
		"newreno, no TLP": func(c *Config) { c.CongestionControl, c.TailLossProbe = "newreno", false },
	}
	scenarios := map[string]func(h *harness){
		"retransmitted FIN": func(h *harness) {
			h.advance(20 * time.Second)
			f := h.fin()
			f.Seq = h.tcb.rcvNxt.Add(^uint32(0))
			h.in(f)
		},
		"RST":               func(h *harness) { h.in(h.rst(h.peerNxt)) },
		"RST out of window": func(h *harness) { h.in(h.rst(h.peerNxt.Add(1 << 30))) },
		"old SYN": func(h *harness) {
			syn := h.peerSyn()
			syn.Seq, syn.Opts.TSVal = h.peerNxt.Add(^uint32(5000)), 1
			h.in(syn)
		},
		"newer SYN": func(h *harness) {
			syn := h.peerSyn()
			syn.Seq, syn.Opts.TSVal = h.peerNxt.Add(7), h.peerTS+5
			if h.tcb.AcceptsNewSyn(&syn) {
				h.output()
			}
		},
		"SYN burst": func(h *harness) {
			for range 8 {
				syn := h.peerSyn()
				syn.Seq = h.peerNxt
				h.in(syn)
			}
		},
		"data in window": func(h *harness) { h.in(h.data([]byte("late"))) },
		"stale ACK":      func(h *harness) { s := h.ack(); s.Seq = h.peerNxt.Add(^uint32(70000)); h.in(s) },
		"ACK of unsent":  func(h *harness) { h.in(h.ackOf(h.tcb.sndMax.Add(100))) },
		"duplicate ACK":  func(h *harness) { h.in(h.ack()) },
		"SACK blocks": func(h *harness) {
			s := h.ack()
			s.Opts.SACKBlocks[0] = packet.SACKBlock{Start: uint32(h.tcb.sndUna.Add(^uint32(99))), End: uint32(h.tcb.sndUna)}
			s.Opts.NumSACK = 1
			h.in(s)
		},
		"2MSL": func(h *harness) { h.advance(61 * time.Second) },
		"application calls": func(h *harness) {
			buf := make([]byte, 8)
			n, err := h.tcb.Read(buf)
			_, werr := h.tcb.Write([]byte("x"))
			h.tcb.Close()
			h.tcb.Abort()
			h.output()
			h.out = append(h.out, Segment{Seq: Seq(n), Payload: []byte(fmt.Sprint(err, werr))})
		},
	}
	for pn, path := range paths {
		for on, opt := range options {
			for sn, sc := range scenarios {
				a, b := path(t, opt), path(t, opt)
				a.tcb.Events() // the engine consumes them before it freezes
				b.tcb.Events()
				r := b.tcb.freezeTimeWait()
				if r == nil {
					t.Fatalf("%s, %s: TIME-WAIT TCB not frozen", pn, on)
				}
				b.tcb = r.thaw()
				a.take()
				b.take()
				sc(a)
				sc(b)
				if oa, ob := observe(a), observe(b); oa != ob {
					t.Errorf("%s, %s, %s:\n TCB:    %s\n thawed: %s", pn, on, sn, oa, ob)
				}
			}
		}
	}
}

func TestTimeWait_NotFrozenWhileSomethingIsPending(t *testing.T) {
	h := timeWait(t)
	h.in(h.data([]byte("x"))) // answered: nothing pending afterwards
	h.take()
	h.tcb.Events()
	if h.tcb.freezeTimeWait() == nil {
		t.Fatal("idle TIME-WAIT not frozen")
	}
	h.tcb.ackNow = true
	if h.tcb.freezeTimeWait() != nil {
		t.Error("frozen with an ACK due")
	}
	h.tcb.ackNow = false
	h.tcb.delackAt = h.now.Add(time.Millisecond)
	if h.tcb.freezeTimeWait() != nil {
		t.Error("frozen with a timer other than 2MSL armed")
	}
	h.tcb.delackAt = 0
	h.tcb.events = EventReadable
	if h.tcb.freezeTimeWait() != nil {
		t.Error("frozen with an event undelivered")
	}
	h.tcb.events = 0
	e := established(t)
	e.tcb.Events()
	if h.tcb.freezeTimeWait() == nil || e.tcb.freezeTimeWait() != nil {
		t.Error("freeze outside TIME-WAIT, or not in it")
	}
}
