package tcp

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
)

// link is a lossy, reordering, duplicating one-way path between two TCBs.
type link struct {
	loss, dup, reorder float64
	delay, jitter      time.Duration
}

type flight struct {
	to  int
	at  clock.Time
	seg Segment
	seq int // tie-breaker: FIFO among equal times
}

// pair connects an active-open TCB (side 0) to a passive one (side 1)
// created from its SYN, through links with manual time.
type pair struct {
	t     *testing.T
	cfg   [2]Config
	tcb   [2]*TCB
	links [2]link // links[i] carries segments sent by side i
	rng   *rand.Rand
	now   clock.Time
	q     []flight
	nseq  int

	src   [2][]byte // what each side still has to write
	sent  [2]int
	got   [2][]byte // what each side read
	eof   [2]bool
	segs  int
	stats [2]Counters

	// drop, when set, decides losses deterministically on top of links.
	drop func(from int, s *Segment) bool
}

func newPair(t *testing.T, seed uint64, mod func(*Config)) *pair {
	p := &pair{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: t0}
	for i := range p.cfg {
		p.cfg[i] = testConfig()
		if mod != nil {
			mod(&p.cfg[i])
		}
		p.cfg[i].Stats = &p.stats[i]
		p.cfg[i].SetDefaults()
	}
	p.tcb[0] = NewSynSent(&p.cfg[0], testISS, p.rng.Uint32(), p.now)
	return p
}

// deliver hands seg to side to, creating the passive TCB on the SYN.
func (p *pair) deliver(to int, seg *Segment) {
	if to == 1 && p.tcb[1] == nil {
		if seg.Flags&(packet.SYN|packet.ACK) != packet.SYN {
			return
		}
		p.tcb[1] = NewSynReceived(&p.cfg[1], seg, testIRS, p.rng.Uint32(), p.now)
		return
	}
	p.tcb[to].Input(seg, p.now)
}

// send queues a copy of seg from side i through its link.
func (p *pair) send(i int, s *Segment) {
	p.segs++
	l := p.links[i]
	if p.rng.Float64() < l.loss || (p.drop != nil && p.drop(i, s)) {
		return
	}
	copies := 1
	if p.rng.Float64() < l.dup {
		copies = 2
	}
	for range copies {
		at := p.now.Add(l.delay)
		if l.jitter > 0 && p.rng.Float64() < l.reorder {
			at = at.Add(time.Duration(p.rng.Int64N(int64(l.jitter))))
		}
		c := *s
		c.Payload = bytes.Clone(s.Payload)
		p.nseq++
		p.q = append(p.q, flight{to: 1 - i, at: at, seg: c, seq: p.nseq})
	}
}

// pump runs the applications and Output on both sides.
func (p *pair) pump() {
	buf := make([]byte, 32<<10)
	for i, tc := range p.tcb {
		if tc == nil {
			continue
		}
		for p.sent[i] < len(p.src[i]) {
			n, err := tc.Write(p.src[i][p.sent[i]:])
			if err != nil || n == 0 {
				break
			}
			p.sent[i] += n
		}
		if p.sent[i] == len(p.src[i]) && p.src[i] != nil {
			tc.CloseWrite()
		}
		for !p.eof[i] {
			n, err := tc.Read(buf)
			p.got[i] = append(p.got[i], buf[:n]...)
			if err != nil {
				p.eof[i] = true
			}
			if n == 0 {
				break
			}
		}
		tc.Output(p.now, func(s *Segment) { p.send(i, s) })
	}
}

// next returns the earliest pending event time.
func (p *pair) next() (clock.Time, bool) {
	var at clock.Time
	for _, f := range p.q {
		if at == 0 || f.at.Before(at) {
			at = f.at
		}
	}
	for _, tc := range p.tcb {
		if tc == nil {
			continue
		}
		if d := tc.Deadline(); d != 0 && (at == 0 || d.Before(at)) {
			at = d
		}
	}
	return at, at != 0
}

// step advances to the next event and processes everything due.
func (p *pair) step() bool {
	at, ok := p.next()
	if !ok {
		return false
	}
	if at.After(p.now) {
		p.now = at
	}
	for {
		k := -1
		for j, f := range p.q {
			if !f.at.After(p.now) && (k < 0 || f.at.Before(p.q[k].at) || (f.at == p.q[k].at && f.seq < p.q[k].seq)) {
				k = j
			}
		}
		if k < 0 {
			break
		}
		f := p.q[k]
		p.q = append(p.q[:k], p.q[k+1:]...)
		p.deliver(f.to, &f.seg)
	}
	for _, tc := range p.tcb {
		if tc != nil {
			if d := tc.Deadline(); d != 0 && !p.now.Before(d) {
				tc.OnTimer(p.now)
			}
		}
	}
	return true
}

// run steps until done or the simulated time limit.
func (p *pair) run(limit time.Duration, done func() bool) {
	p.t.Helper()
	end := p.now.Add(limit)
	for p.pump(); !done(); p.pump() {
		if !p.step() || p.now.After(end) {
			if p.tcb[1] != nil {
				a, b := p.tcb[0], p.tcb[1]
				p.t.Logf("side 0: una=%d nxt=%d wnd=%d unsent=%d; side 1: buffered=%d wnd=%d",
					a.sndUna, a.sndNxt, a.sndWnd, a.sndBuf.len(), b.rcvBuf.len(), b.rcvWnd())
			}
			p.t.Fatalf("stalled at %v: states %v/%v, sent %d/%d, got %d/%d",
				p.now.Sub(t0), p.state(0), p.state(1), p.sent[0], p.sent[1], len(p.got[1]), len(p.got[0]))
		}
	}
}

func (p *pair) state(i int) State {
	if p.tcb[i] == nil {
		return Listen
	}
	return p.tcb[i].State()
}

func (p *pair) established() bool {
	return p.state(0) == Established && p.state(1) == Established
}

// transfer sends n0 bytes from side 0 and n1 from side 1, both closing
// when done, and checks every byte and the final states.
func (p *pair) transfer(n0, n1 int, limit time.Duration) {
	p.t.Helper()
	p.run(10*time.Second, p.established)
	p.src[0], p.src[1] = pattern(0, n0), pattern(7, n1)
	p.run(limit, func() bool {
		return p.eof[0] && p.eof[1] && p.tcb[0].Done() == (p.state(0) == Closed) &&
			(p.state(0) == TimeWait || p.state(0) == Closed) && p.state(1) == Closed
	})
	if !bytes.Equal(p.got[1], p.src[0]) {
		p.t.Fatalf("side 1 got %d bytes, want %d (mismatch)", len(p.got[1]), n0)
	}
	if !bytes.Equal(p.got[0], p.src[1]) {
		p.t.Fatalf("side 0 got %d bytes, want %d (mismatch)", len(p.got[0]), n1)
	}
	for i := range p.tcb {
		if err := p.tcb[i].Err(); err != nil {
			p.t.Fatalf("side %d error %v", i, err)
		}
	}
}

func TestPair_HandshakeNegotiatesEverything(t *testing.T) {
	p := newPair(t, 1, nil)
	p.links = [2]link{{delay: time.Millisecond}, {delay: time.Millisecond}}
	p.run(time.Second, p.established)
	a, b := p.tcb[0], p.tcb[1]
	if !a.wsOK || !b.wsOK || !a.sackOK || !b.sackOK || !a.tsOK || !b.tsOK {
		t.Fatalf("options not negotiated: a %v%v%v b %v%v%v", a.wsOK, a.sackOK, a.tsOK, b.wsOK, b.sackOK, b.tsOK)
	}
	if a.sndShift != b.rcvShift || b.sndShift != a.rcvShift {
		t.Fatal("window shifts disagree")
	}
}

func TestPair_CleanTransferBothWays(t *testing.T) {
	p := newPair(t, 2, nil)
	p.links = [2]link{{delay: 5 * time.Millisecond}, {delay: 5 * time.Millisecond}}
	p.transfer(2<<20, 1<<20, 2*time.Minute)
	for i := range p.stats {
		if n := p.stats[i].Retransmits.Load(); n != 0 {
			t.Errorf("side %d retransmitted %d segments on a clean path", i, n)
		}
	}
}

func TestPair_TransferSurvivesLossReorderAndDuplication(t *testing.T) {
	for seed := range uint64(4) {
		p := newPair(t, 100+seed, nil)
		l := link{loss: 0.02, dup: 0.01, reorder: 0.05, delay: 5 * time.Millisecond, jitter: 15 * time.Millisecond}
		p.links = [2]link{l, l}
		p.transfer(1<<20, 256<<10, 10*time.Minute)
		if p.stats[0].Retransmits.Load() == 0 || p.stats[1].OutOfOrder.Load() == 0 {
			t.Fatalf("seed %d: no retransmission or reordering happened: the test tests nothing", seed)
		}
	}
}

func TestPair_TransferWithoutOptions(t *testing.T) {
	p := newPair(t, 3, func(c *Config) { c.WindowScale, c.SACK, c.Timestamps = false, false, false })
	l := link{loss: 0.01, reorder: 0.05, delay: 2 * time.Millisecond, jitter: 5 * time.Millisecond}
	p.links = [2]link{l, l}
	p.transfer(512<<10, 512<<10, 10*time.Minute)
}

func TestPair_TransferWithNewReno(t *testing.T) {
	p := newPair(t, 4, func(c *Config) { c.CongestionControl = "newreno" })
	l := link{loss: 0.01, delay: 3 * time.Millisecond}
	p.links = [2]link{l, l}
	p.transfer(1<<20, 0, 10*time.Minute)
}

func TestPair_SlowReaderThrottlesThroughZeroWindow(t *testing.T) {
	p := newPair(t, 5, func(c *Config) { c.RecvBufSize, c.RecvBufMax = 8<<10, 8<<10 })
	p.links = [2]link{{delay: time.Millisecond}, {delay: time.Millisecond}}
	p.run(time.Second, p.established)
	p.src[0] = pattern(0, 100<<10)
	// Side 1 does not read for a while: side 0 must stop at the window.
	p.eof[1] = true
	p.run(5*time.Second, func() bool { return p.tcb[0].sndWnd == 0 && p.tcb[1].rcvBuf.len() == 8<<10 })
	p.run(5*time.Second, func() bool {
		return p.tcb[0].sndWnd == 0 && p.tcb[1].rcvBuf.len() == 8<<10 && p.stats[0].PersistProbes.Load() > 2
	})
	if got := p.tcb[1].rcvBuf.len(); got != 8<<10 {
		t.Fatalf("receiver holds %d bytes, want a full 8 KiB buffer", got)
	}
	p.eof[1] = false
	p.src[1] = []byte{}
	p.run(time.Minute, func() bool { return p.eof[1] })
	if !bytes.Equal(p.got[1], p.src[0]) {
		t.Fatalf("got %d bytes, want %d", len(p.got[1]), len(p.src[0]))
	}
}

func TestPair_SimultaneousCloseGoesThroughClosing(t *testing.T) {
	p := newPair(t, 6, nil)
	p.links = [2]link{{delay: 10 * time.Millisecond}, {delay: 10 * time.Millisecond}}
	p.run(time.Second, p.established)
	var seen [2]map[State]bool
	for i := range p.tcb {
		seen[i] = map[State]bool{}
		p.tcb[i].SetTrace(func(e TraceEvent) {
			if e.Kind == TraceState {
				seen[i][e.To] = true
			}
		})
		p.tcb[i].CloseWrite()
	}
	p.run(5*time.Minute, func() bool { return p.tcb[0].Done() && p.tcb[1].Done() })
	for i := range seen {
		if !seen[i][Closing] || !seen[i][TimeWait] {
			t.Fatalf("side %d went through %v, want CLOSING and TIME-WAIT", i, seen[i])
		}
	}
}

func TestPair_ActiveOpenRefusedByRST(t *testing.T) {
	p := newPair(t, 7, nil)
	var syn Segment
	p.tcb[0].Output(p.now, func(s *Segment) { syn = *s })
	p.tcb[0].Input(&Segment{Seq: 0, Ack: syn.Seq.Add(1), Flags: packet.RST | packet.ACK}, p.now)
	if p.state(0) != Closed || p.tcb[0].Err() != ErrConnRefused {
		t.Fatalf("state %v err %v, want CLOSED, refused", p.state(0), p.tcb[0].Err())
	}
}
