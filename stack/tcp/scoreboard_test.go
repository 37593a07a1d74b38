package tcp

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tungate/tungate/internal/packet"
)

// sbBase is SND.UNA at the start of the tests: near 2^32 so the window
// wraps.
const sbBase Seq = 0xffff_fe00

const sbMSS = 100

func blk(a, b uint32) packet.SACKBlock {
	return packet.SACKBlock{Start: uint32(sbBase.Add(a)), End: uint32(sbBase.Add(b))}
}

// ranges returns the scoreboard's ranges as offsets from sbBase.
func (s *scoreboard) offsets() [][2]uint32 {
	out := [][2]uint32{}
	for _, r := range s.r[:s.n] {
		out = append(out, [2]uint32{uint32(r.start - sbBase), uint32(r.end - sbBase)})
	}
	return out
}

func TestScoreboard_UpdateMergesAndCountsNewBytes(t *testing.T) {
	una, nxt := sbBase, sbBase.Add(2000)
	steps := []struct {
		blocks []packet.SACKBlock
		newly  uint32
		want   string
	}{
		{[]packet.SACKBlock{blk(200, 300)}, 100, "[[200 300]]"},
		{[]packet.SACKBlock{blk(400, 500), blk(200, 300)}, 100, "[[200 300] [400 500]]"},
		{[]packet.SACKBlock{blk(300, 400)}, 100, "[[200 500]]"}, // fills the gap: one range
		{[]packet.SACKBlock{blk(250, 600)}, 100, "[[200 600]]"}, // overlap: only 500-600 new
		{[]packet.SACKBlock{blk(800, 900), blk(700, 750)}, 150, "[[200 600] [700 750] [800 900]]"},
		{[]packet.SACKBlock{blk(100, 1000)}, 350, "[[100 1000]]"}, // swallows all
		{[]packet.SACKBlock{blk(100, 1000)}, 0, "[[100 1000]]"},   // repeat: nothing new
	}
	var s scoreboard
	for i, st := range steps {
		newly := s.update(una, nxt, st.blocks)
		if got := fmt.Sprint(s.offsets()); got != st.want || newly != st.newly {
			t.Fatalf("step %d: ranges %s newly %d, want %s newly %d", i, got, newly, st.want, st.newly)
		}
	}
	if s.sackedBytes() != 900 || s.highestSacked() != sbBase.Add(1000) {
		t.Errorf("sacked %d highest %d", s.sackedBytes(), s.highestSacked()-sbBase)
	}
}

func TestScoreboard_InvalidBlocksIgnored(t *testing.T) {
	una, nxt := sbBase.Add(100), sbBase.Add(1000)
	tests := []struct {
		name   string
		blocks []packet.SACKBlock
		want   string
	}{
		{"empty block", []packet.SACKBlock{blk(300, 300)}, "[]"},
		{"reversed block", []packet.SACKBlock{blk(400, 300)}, "[]"},
		{"beyond SND.NXT", []packet.SACKBlock{blk(900, 1001)}, "[]"},
		{"wholly acked (D-SACK)", []packet.SACKBlock{blk(0, 100)}, "[]"},
		{"D-SACK then valid", []packet.SACKBlock{blk(0, 50), blk(300, 400)}, "[[300 400]]"},
		{"D-SACK inside second block", []packet.SACKBlock{blk(320, 340), blk(300, 400)}, "[[300 400]]"},
		{"straddles SND.UNA: clipped", []packet.SACKBlock{blk(50, 200)}, "[[100 200]]"},
		{"huge wrapped block", []packet.SACKBlock{{Start: uint32(sbBase.Add(500)), End: uint32(sbBase.Add(400))}}, "[]"},
		{"far outside", []packet.SACKBlock{{Start: 0x4000_0000, End: 0x4000_0100}}, "[]"},
		{"valid up to SND.NXT", []packet.SACKBlock{blk(900, 1000)}, "[[900 1000]]"},
	}
	for _, tt := range tests {
		var s scoreboard
		s.update(una, nxt, tt.blocks)
		if got := fmt.Sprint(s.offsets()); got != tt.want {
			t.Errorf("%s: ranges %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestScoreboard_CumulativeAckPrunes(t *testing.T) {
	var s scoreboard
	nxt := sbBase.Add(2000)
	s.update(sbBase, nxt, []packet.SACKBlock{blk(200, 300), blk(500, 700)})
	s.update(sbBase.Add(250), nxt, nil)
	if got := fmt.Sprint(s.offsets()); got != "[[250 300] [500 700]]" || s.sackedBytes() != 250 {
		t.Fatalf("after ACK 250: %s sacked %d", got, s.sackedBytes())
	}
	s.update(sbBase.Add(700), nxt, nil)
	if s.sackedBytes() != 0 || len(s.offsets()) != 0 {
		t.Fatalf("after ACK 700: %v sacked %d", s.offsets(), s.sackedBytes())
	}
}

func TestScoreboard_FullForgetsHighestRange(t *testing.T) {
	var s scoreboard
	una, nxt := sbBase, sbBase.Add(100000)
	for i := range uint32(sbMaxBlocks) {
		s.update(una, nxt, []packet.SACKBlock{blk(1000+200*i, 1100+200*i)})
	}
	top := s.highestSacked()
	if newly := s.update(una, nxt, []packet.SACKBlock{blk(90000, 90100)}); newly != 0 || s.highestSacked() != top {
		t.Fatalf("a 33rd range above all was stored (newly %d)", newly)
	}
	if newly := s.update(una, nxt, []packet.SACKBlock{blk(100, 200)}); newly != 100 {
		t.Fatalf("a 33rd range below all: newly %d, want 100", newly)
	}
	if s.n != sbMaxBlocks || s.highestSacked() != top-200 || !s.isSacked(sbBase.Add(150)) {
		t.Fatalf("n %d highest %d: the highest range should have made room", s.n, s.highestSacked()-sbBase)
	}
	if s.sackedBytes() != 100*sbMaxBlocks {
		t.Fatalf("sacked %d, want %d", s.sackedBytes(), 100*sbMaxBlocks)
	}
}

func TestScoreboard_IsLostRules(t *testing.T) {
	una, nxt := sbBase, sbBase.Add(2000)
	tests := []struct {
		name   string
		blocks []packet.SACKBlock
		seq    uint32
		want   bool
	}{
		{"nothing SACKed", nil, 0, false},
		{"two segments above", []packet.SACKBlock{blk(100, 300)}, 0, false},
		{"exactly 2*SMSS above is not more than", []packet.SACKBlock{blk(100, 300)}, 50, false},
		{"2*SMSS+1 above", []packet.SACKBlock{blk(100, 301)}, 99, true},
		{"three segments above", []packet.SACKBlock{blk(100, 400)}, 0, true},
		{"three discontiguous small ranges", []packet.SACKBlock{blk(100, 110), blk(200, 210), blk(300, 310)}, 0, true},
		{"two discontiguous small ranges", []packet.SACKBlock{blk(100, 110), blk(200, 210)}, 0, false},
		{"ranges below do not count", []packet.SACKBlock{blk(100, 400)}, 400, false},
		{"byte inside a range counts bytes above it", []packet.SACKBlock{blk(100, 400)}, 150, true},
		{"byte with 201 SACKed above", []packet.SACKBlock{blk(100, 400)}, 198, true},
		{"byte with exactly 200 SACKed above", []packet.SACKBlock{blk(100, 400)}, 199, false},
	}
	for _, tt := range tests {
		var s scoreboard
		s.update(una, nxt, tt.blocks)
		if got := s.isLost(sbBase.Add(tt.seq), sbMSS, 3); got != tt.want {
			t.Errorf("%s: isLost(%d) = %v, want %v", tt.name, tt.seq, got, tt.want)
		}
	}
}

func TestScoreboard_NextSegRules(t *testing.T) {
	una, nxt := sbBase, sbBase.Add(1000)
	tests := []struct {
		name     string
		blocks   []packet.SACKBlock
		highRxt  uint32
		newAvail uint32
		start    uint32
		length   uint32
		ok       bool
	}{
		{"rule 1: first lost hole", []packet.SACKBlock{blk(100, 400)}, 0, 500, 0, 100, true},
		{"rule 1: hole shorter than SMSS", []packet.SACKBlock{blk(50, 400)}, 0, 500, 0, 50, true},
		{"rule 1: past HighRxt", []packet.SACKBlock{blk(100, 400), blk(500, 900)}, 100, 500, 400, 100, true},
		{"rule 1: HighRxt inside a hole", []packet.SACKBlock{blk(200, 500)}, 60, 0, 60, 100, true},
		{"rule 2: nothing lost yet, new data", []packet.SACKBlock{blk(100, 200)}, 0, 500, 1000, 100, true},
		{"rule 2: new data shorter than SMSS", []packet.SACKBlock{blk(100, 200)}, 0, 30, 1000, 30, true},
		{"rule 3: not lost, no new data", []packet.SACKBlock{blk(100, 200)}, 0, 0, 0, 100, true},
		{"rule 3 skips retransmitted", []packet.SACKBlock{blk(100, 200), blk(300, 350)}, 100, 0, 200, 100, true},
		{"rule 5: nothing to send", []packet.SACKBlock{blk(100, 200)}, 100, 0, 0, 0, false},
		{"rule 5: no SACK, no data", nil, 0, 0, 0, 0, false},
		{"no SACK: new data", nil, 0, 1000, 1000, 100, true},
	}
	for _, tt := range tests {
		var s scoreboard
		s.update(una, nxt, tt.blocks)
		start, length, ok := s.nextSeg(una, nxt, sbBase.Add(tt.highRxt), sbMSS, 3, tt.newAvail)
		if ok != tt.ok || (ok && (start != sbBase.Add(tt.start) || length != tt.length)) {
			t.Errorf("%s: got [%d +%d] %v, want [%d +%d] %v", tt.name, start-sbBase, length, ok, tt.start, tt.length, tt.ok)
		}
	}
}

func TestScoreboard_RescueSegCoversHighestUnsacked(t *testing.T) {
	una, nxt := sbBase, sbBase.Add(1000)
	tests := []struct {
		name          string
		blocks        []packet.SACKBlock
		start, length uint32
		ok            bool
	}{
		{"tail unsacked", []packet.SACKBlock{blk(100, 500)}, 900, 100, true},
		{"tail SACKed, hole below", []packet.SACKBlock{blk(100, 500), blk(560, 1000)}, 500, 60, true},
		{"nothing SACKed", nil, 900, 100, true},
		{"everything SACKed", []packet.SACKBlock{blk(0, 1000)}, 0, 0, false},
		{"only the first bytes unsacked", []packet.SACKBlock{blk(30, 1000)}, 0, 30, true},
	}
	for _, tt := range tests {
		var s scoreboard
		s.update(una, nxt, tt.blocks)
		start, length, ok := s.rescueSeg(una, nxt, sbMSS)
		if ok != tt.ok || (ok && (start != sbBase.Add(tt.start) || length != tt.length)) {
			t.Errorf("%s: got [%d +%d] %v, want [%d +%d] %v", tt.name, start-sbBase, length, ok, tt.start, tt.length, tt.ok)
		}
	}
}

// sbModel is the per-byte reference for RFC 6675 §4 over [una, una+n).
type sbModel struct {
	sacked []bool
}

func (m *sbModel) lost(mss uint32, dupThresh int) []bool {
	n := len(m.sacked)
	lost := make([]bool, n)
	runs, bytes := 0, 0
	for s := n - 1; s >= 0; s-- {
		// State describes bytes strictly above s.
		lost[s] = runs >= dupThresh || bytes > (dupThresh-1)*int(mss)
		if m.sacked[s] {
			bytes++
			if s == 0 || !m.sacked[s-1] {
				runs++ // a run starts at s: it is above s-1
			}
		}
	}
	return lost
}

func (m *sbModel) pipe(rxt int, lost []bool) uint32 {
	p := uint32(0)
	for s := range m.sacked {
		if m.sacked[s] {
			continue
		}
		if !lost[s] {
			p++
		}
		if s < rxt {
			p++
		}
	}
	return p
}

func (m *sbModel) nextSeg(rxt int, lost []bool, mss uint32, newAvail uint32) (start int, length uint32, ok bool) {
	hs := -1
	for s := range m.sacked {
		if m.sacked[s] {
			hs = s
		}
	}
	hole := func(s int) (int, uint32, bool) {
		e := s
		for e < len(m.sacked) && !m.sacked[e] && e-s < int(mss) {
			e++
		}
		return s, uint32(e - s), true
	}
	for s := rxt; s < hs; s++ {
		if !m.sacked[s] && lost[s] {
			return hole(s)
		}
	}
	if newAvail > 0 {
		return len(m.sacked), min(mss, newAvail), true
	}
	for s := rxt; s < hs; s++ {
		if !m.sacked[s] {
			return hole(s)
		}
	}
	return 0, 0, false
}

func TestScoreboard_MatchesPerByteModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const window = 3000
	for trial := range 300 {
		var s scoreboard
		m := &sbModel{sacked: make([]bool, window)}
		una := sbBase.Add(uint32(rng.IntN(512)))
		nxt := una.Add(window)
		dupThresh := 1 + rng.IntN(4)
		for ack := range 6 {
			var blocks []packet.SACKBlock
			for range 1 + rng.IntN(4) {
				a := rng.IntN(window / sbMSS)
				b := a + 1 + rng.IntN(4)
				lo, hi := a*sbMSS, min(window, b*sbMSS)
				if rng.IntN(3) == 0 { // unaligned
					lo += rng.IntN(sbMSS)
				}
				blocks = append(blocks, packet.SACKBlock{Start: uint32(una.Add(uint32(lo))), End: uint32(una.Add(uint32(hi)))})
			}
			// Drop D-SACK-shaped first blocks from the model: the scoreboard
			// ignores them by design.
			if len(blocks) > 1 && sbIsDSACK(blocks[0], blocks, una) {
				blocks = blocks[1:]
			}
			want := uint32(0)
			for _, b := range blocks {
				for o := uint32(Seq(b.Start) - una); o < uint32(Seq(b.End)-una); o++ {
					if !m.sacked[o] {
						m.sacked[o] = true
						want++
					}
				}
			}
			if got := s.update(una, nxt, blocks); got != want {
				t.Fatalf("trial %d ack %d: newly SACKed %d, want %d", trial, ack, got, want)
			}
			lost := m.lost(sbMSS, dupThresh)
			total := uint32(0)
			for o := range window {
				seq := una.Add(uint32(o))
				if s.isSacked(seq) != m.sacked[o] {
					t.Fatalf("trial %d ack %d: isSacked(%d) = %v", trial, ack, o, !m.sacked[o])
				}
				if got := s.isLost(seq, sbMSS, dupThresh); got != lost[o] {
					t.Fatalf("trial %d ack %d: isLost(%d) = %v, want %v", trial, ack, o, got, lost[o])
				}
				if m.sacked[o] {
					total++
				}
			}
			if s.sackedBytes() != total {
				t.Fatalf("trial %d ack %d: sackedBytes %d, want %d", trial, ack, s.sackedBytes(), total)
			}
			rxt := rng.IntN(window)
			if rng.IntN(3) == 0 {
				rxt = 0
			}
			if got, want := s.pipe(una, nxt, una.Add(uint32(rxt)), sbMSS, dupThresh), m.pipe(rxt, lost); got != want {
				t.Fatalf("trial %d ack %d: pipe(highRxt %d, dupThresh %d) = %d, want %d (ranges %v)", trial, ack, rxt, dupThresh, got, want, s.r[:s.n])
			}
			newAvail := uint32(rng.IntN(2) * rng.IntN(300))
			gs, gl, gok := s.nextSeg(una, nxt, una.Add(uint32(rxt)), sbMSS, dupThresh, newAvail)
			ws, wl, wok := m.nextSeg(rxt, lost, sbMSS, newAvail)
			if gok != wok || (gok && (gs != una.Add(uint32(ws)) || gl != wl)) {
				t.Fatalf("trial %d ack %d: nextSeg = [%d +%d] %v, want [%d +%d] %v", trial, ack, gs-una, gl, gok, ws, wl, wok)
			}
		}
	}
}

func TestScoreboard_DoesNotAllocate(t *testing.T) {
	var s scoreboard
	una, nxt := sbBase, sbBase.Add(100000)
	blocks := []packet.SACKBlock{blk(3000, 4000), blk(1000, 2000), blk(5000, 5100)}
	allocs := testing.AllocsPerRun(100, func() {
		s.reset()
		s.update(una, nxt, blocks)
		s.isLost(una, 1000, 3)
		s.pipe(una, nxt, una.Add(1000), 1000, 3)
		s.nextSeg(una, nxt, una, 1000, 3, 0)
		s.rescueSeg(una, nxt, 1000)
	})
	if allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}

func BenchmarkScoreboardRecoveryStep(b *testing.B) {
	var s scoreboard
	una, nxt := sbBase, sbBase.Add(1<<20)
	var blocks [3]packet.SACKBlock
	for i := range uint32(16) {
		s.update(una, nxt, []packet.SACKBlock{blk(1460*(2*i+1), 1460*(2*i+2))})
	}
	b.ReportAllocs()
	for b.Loop() {
		blocks[0] = blk(1460*40, 1460*41)
		s.update(una, nxt, blocks[:1])
		s.pipe(una, nxt, una.Add(1460), 1460, 3)
		s.nextSeg(una, nxt, una.Add(1460), 1460, 3, 0)
	}
}
