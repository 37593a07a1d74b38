package tcp

import (
	"fmt"
	"sync"

	"github.com/tungate/tungate/stack"
)

// maxLadderLines bounds one recorded ladder: a handshake and a four-way
// close take about twenty lines; a connection that keeps resetting or
// retransmitting its FIN stops there.
const maxLadderLines = 64

// maxLiveLadders bounds the ladders of live connections, whatever goes
// wrong: past it, new connections are not recorded.
const maxLiveLadders = 1 << 16

// Recorder keeps the ladders of connections (see Tracer): each live
// connection's, and those of the last connections that ended, for the
// connections API. A ladder is found by the ID the proxy gave its flow
// (Tracer.Bind). Its methods are safe for concurrent use.
type Recorder struct {
	keep int

	mu     sync.Mutex // guards the fields below
	live   map[stack.FlowID]*ladder
	byConn map[uint64]*ladder
	done   []*ladder // finished ladders with an ID, oldest first; at most keep
}

type ladder struct {
	conn    uint64 // 0 until bound
	lines   []string
	dropped int // lines past maxLadderLines
}

// NewRecorder keeps the ladders of live connections and of the last keep
// that ended.
func NewRecorder(keep int) *Recorder {
	return &Recorder{keep: max(keep, 0), live: make(map[stack.FlowID]*ladder), byConn: make(map[uint64]*ladder)}
}

// open starts a ladder for id (replacing a live one of an earlier
// connection on the same addresses).
func (r *Recorder) open(id stack.FlowID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.live) >= maxLiveLadders && r.live[id] == nil {
		return
	}
	r.live[id] = &ladder{}
}

func (r *Recorder) has(id stack.FlowID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[id] != nil
}

// add appends a line to the live ladder of id, if there is one.
func (r *Recorder) add(id stack.FlowID, line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.live[id]
	if l == nil {
		return
	}
	if len(l.lines) >= maxLadderLines {
		l.dropped++
		return
	}
	l.lines = append(l.lines, line)
}

func (r *Recorder) bind(id stack.FlowID, conn uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.live[id]
	if l == nil {
		return // ended already, or not recorded
	}
	l.conn = conn
	r.byConn[conn] = l
}

// retire moves the live ladder of id to the finished ones, dropping the
// oldest past keep.
func (r *Recorder) retire(id stack.FlowID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.live[id]
	if l == nil {
		return
	}
	delete(r.live, id)
	if l.conn == 0 {
		return // never became a flow of the proxy (RST, cookie failures)
	}
	r.done = append(r.done, l)
	for len(r.done) > r.keep {
		old := r.done[0]
		r.done[0] = nil
		r.done = r.done[1:]
		if r.byConn[old.conn] == old {
			delete(r.byConn, old.conn)
		}
	}
}

// Ladder returns the lines of connection conn's ladder, live or among
// the last finished, and whether there is one.
func (r *Recorder) Ladder(conn uint64) ([]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.byConn[conn]
	if l == nil {
		return nil, false
	}
	out := append([]string(nil), l.lines...)
	if l.dropped > 0 {
		out = append(out, fmt.Sprintf("… %d more lines not kept", l.dropped))
	}
	return out, true
}

// quietState reports whether data may flow in s, so that a recorded
// ladder counts its plain segments instead of keeping them.
func quietState(s State) bool {
	switch s {
	case Established, CloseWait, FinWait1, FinWait2:
		return true
	}
	return false
}
