package tcp

import (
	"time"

	"github.com/tungate/tungate/internal/clock"
	"github.com/tungate/tungate/internal/packet"
	"github.com/tungate/tungate/stack"
)

// cookieWindow is how long after sending a SYN cookie the engine checks
// stray ACKs for one (a cookie is valid for up to two 64 s slots).
const cookieWindow = 130 * time.Second

// listen handles a segment for which no flow exists: the LISTEN state of
// RFC 9293 §3.10.7.2, for every address the TUN delivers.
func (e *Engine) listen(id stack.FlowID, seg *Segment, now clock.Time, b *outBatch) {
	e.opts.Trace.segment(id, "in", seg, "LISTEN")
	switch {
	case seg.Flags&packet.RST != 0:
		// "An incoming RST should be ignored."
		e.ec.rstsNoFlow.Add(1)
	case seg.Flags&packet.ACK != 0:
		if seg.Flags&packet.SYN == 0 && e.cookieACK(id, seg, now, b) {
			return
		}
		// "Any acknowledgment is bad if it arrives on a connection still
		// in the LISTEN state": <SEQ=SEG.ACK><CTL=RST>.
		e.sendRST(id, seg, b)
	case seg.Flags&packet.SYN != 0 && seg.Flags&packet.FIN != 0:
		// RFC 9293 does not forbid a SYN carrying FIN, but no real client
		// sends one, and scanners use it to fingerprint stacks; Linux and
		// FreeBSD drop it in LISTEN, and so does the engine.
		e.ec.droppedNoFlow.Add(1)
		e.opts.Trace.note(id, "SYN with FIN dropped in LISTEN")
	case seg.Flags&packet.SYN != 0:
		e.newSYN(id, seg, now, b)
	default:
		// "Any other control or text-bearing segment ... drop it."
		e.ec.droppedNoFlow.Add(1)
	}
}

// newSYN opens a pending flow for seg and asks the handler, or answers
// with a SYN cookie when a backlog is full.
func (e *Engine) newSYN(id stack.FlowID, seg *Segment, now clock.Time, b *outBatch) {
	e.ec.syns.Add(1)
	f := &flow{id: id, e: e, heapIdx: -1}
	f.syn = *seg
	f.syn.Payload = nil // data on a SYN is not acknowledged; the app resends it
	f.req = &request{f: f}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	if existing := e.flows[id]; existing != nil {
		// Raced with another SYN for the same tuple: it is pending now.
		e.mu.Unlock()
		existing.input(seg, now, b)
		return
	}
	if e.opts.AlwaysSYNCookies || e.pending >= e.opts.PendingBacklog || e.synRcvd >= e.opts.SynBacklog {
		e.mu.Unlock()
		e.sendCookie(id, seg, now, b)
		return
	}
	e.flows[id] = f
	e.pending++
	f.inPending = true
	e.wg.Add(1)
	e.mu.Unlock()

	e.opts.Trace.start(id, seg, "LISTEN")
	e.opts.Trace.note(id, "SYN held while the handler decides")
	go e.handle(f.req)
}

// handle runs the handler for one request and makes sure it was decided.
func (e *Engine) handle(r *request) {
	defer e.wg.Done()
	e.h.HandleTCP(e.ctx, r)
	if !r.decided.Load() {
		e.ec.handlerUndecided.Add(1)
		e.log.Warn("tcp: handler returned without Accept or Reject; resetting", "flow", r.f.id)
		r.Reject(true)
	}
}

// sendCookie answers a SYN statelessly (RFC 4987 §3.6). The MSS is
// encoded in the ISS; window scale and SACK-permitted in the low bits of
// our TSval when the client sent timestamps (without them, the SYN-ACK
// offers neither, as Linux does).
func (e *Engine) sendCookie(id stack.FlowID, syn *Segment, now clock.Time, b *outBatch) {
	cfg := e.config(id)
	peerMSS := uint16(cfg.DefaultSendMSS)
	if syn.Opts.HasMSS {
		peerMSS = syn.Opts.MSS
	}
	iss, mss := e.cookies.make(id.Src, id.Dst, syn.Seq, min(peerMSS, uint16(cfg.MSS)), now)
	out := Segment{Seq: iss, Ack: syn.Seq.Add(1), Flags: packet.SYN | packet.ACK}
	out.Wnd = uint16(min(cfg.RecvBufSize, 0xffff))
	out.Opts.HasMSS, out.Opts.MSS = true, uint16(cfg.MSS)
	_ = mss
	if syn.Opts.HasTS && cfg.Timestamps {
		wscale := int8(-1)
		if syn.Opts.HasWScale && cfg.WindowScale {
			wscale = int8(min(syn.Opts.WScale, packet.MaxWScale))
			out.Opts.HasWScale, out.Opts.WScale = true, windowShift(cfg)
		}
		sack := syn.Opts.SACKPermitted && cfg.SACK
		out.Opts.SACKPermitted = sack
		out.Opts.HasTS = true
		out.Opts.TSVal = cookieTSVal(uint32(now.Sub(e.tsEpoch)/time.Millisecond), wscale, sack)
		out.Opts.TSEcr = syn.Opts.TSVal
	}
	e.ec.cookiesSent.Add(1)
	e.lastCookie.Store(int64(now))
	e.opts.Trace.segment(id, "out", &out, "SYN cookie: backlog full")
	b.cur = id
	b.emit(&out)
}

// cookieACK completes a SYN-cookie handshake if seg carries a valid
// cookie, and reports whether it did.
func (e *Engine) cookieACK(id stack.FlowID, seg *Segment, now clock.Time, b *outBatch) bool {
	last := e.lastCookie.Load()
	if last == 0 || now.Sub(clock.Time(last)) > cookieWindow {
		return false
	}
	irs := seg.Seq.Add(^uint32(0))
	iss := seg.Ack.Add(^uint32(0))
	mss, ok := e.cookies.check(id.Src, id.Dst, irs, iss, now)
	if !ok {
		e.ec.cookiesInvalid.Add(1)
		return false
	}
	cfg := e.config(id)
	wscale, sack := int8(-1), false
	if seg.Opts.HasTS && cfg.Timestamps {
		wscale, sack = decodeCookieTS(seg.Opts.TSEcr)
	}
	f := &flow{id: id, e: e, heapIdx: -1}
	f.req = &request{f: f, preEstablished: true}
	e.mu.Lock()
	if e.closed || e.flows[id] != nil {
		e.mu.Unlock()
		return true
	}
	e.flows[id] = f
	e.wg.Add(1)
	e.mu.Unlock()
	e.ec.cookiesValid.Add(1)

	f.mu.Lock()
	// tsOffset 0: the cookie's TSval was sent without a per-connection
	// offset, and the peer's TSecr must keep making sense.
	f.tcb = NewFromCookie(cfg, seg, iss, irs, int(mss), wscale, sack, 0, now)
	e.opts.Trace.start(id, seg, "ACK with a valid SYN cookie")
	e.opts.Trace.attach(f)
	f.conn = newConn(f)
	// The ACK may carry data (and FIN): let the TCB process its text.
	f.tcb.Input(seg, now)
	f.afterLocked(now, b)
	f.mu.Unlock()
	e.opts.Trace.note(id, "connection from a valid SYN cookie")
	go e.handle(f.req)
	return true
}

// sendRST answers seg with a RST as RFC 9293 §3.10.7.1 says for a segment
// that belongs to no connection: <SEQ=SEG.ACK><CTL=RST> if it has ACK,
// else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
func (e *Engine) sendRST(id stack.FlowID, seg *Segment, b *outBatch) {
	var out Segment
	if seg.Flags&packet.ACK != 0 {
		out = Segment{Seq: seg.Ack, Flags: packet.RST}
	} else {
		out = Segment{Ack: seg.Seq.Add(seg.Len()), Flags: packet.RST | packet.ACK}
	}
	e.ec.rstsSentNoFlow.Add(1)
	e.opts.Trace.segment(id, "out", &out, "RST: no connection")
	b.cur = id
	b.emit(&out)
}
