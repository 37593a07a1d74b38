package tcp

import (
	"fmt"

	"github.com/tungate/tungate/internal/packet"
)

// legalTransition is the state diagram of RFC 9293 §3.3.2 with the
// implementation's shortcuts: CLOSED from any state by reset, abort or
// timeout, and FIN-WAIT-1 reached from SYN-RECEIVED through ESTABLISHED.
func legalTransition(from, to State) bool {
	if to == Closed {
		return from != Closed
	}
	switch from {
	case Listen:
		return to == SynReceived
	case SynSent:
		return to == SynReceived || to == Established
	case SynReceived:
		return to == Established
	case Established:
		return to == FinWait1 || to == CloseWait
	case FinWait1:
		return to == FinWait2 || to == Closing || to == TimeWait
	case FinWait2, Closing:
		return to == TimeWait
	case CloseWait:
		return to == LastAck
	}
	return false
}

// fzPeer is the app side of one flow: what it sent, and so what the
// engine may send and acknowledge.
type fzPeer struct {
	v6     bool
	synOpt packet.TCPOptions // what our SYN offered

	irs, iss Seq
	synced   bool // the SYN-ACK of this incarnation was seen
	sentEnd  Seq  // highest SEQ+LEN the app side sent
	sentSet  bool // sentEnd holds a value
	nxt      Seq  // the app side's next in-order sequence number: base of seq offsets
	sndMax   Seq  // highest SEQ+LEN the engine sent: base of ack offsets
	sentAck  Seq  // last ACK the app side sent

	lastAck      Seq // ACK field of the engine's last segment
	ackSeen      bool
	edge         Seq // right edge of the engine's receive window
	edgeSet      bool
	shift        uint8
	tsOn, sackOn bool
	tsval, tsecr uint32
	peerMSS      int

	written  uint64 // bytes the application wrote
	finMaybe bool   // the application closed its direction
	readNxt  Seq    // sequence number of the next byte the application reads

	// Internal state of the current TCB, for the monotonicity checks.
	rcvAdv    Seq
	rcvAdvSet bool
	trans     []string // illegal transitions seen by the trace hook
	visited   [TimeWait + 1]bool
}

// reset starts a new incarnation with the app's ISN irs and our iss.
func (p *fzPeer) reset(irs, iss Seq) {
	p.irs, p.iss, p.synced = irs, iss, false
	p.nxt, p.readNxt, p.sentAck = irs.Add(1), irs.Add(1), iss
	p.sndMax, p.ackSeen, p.edgeSet = iss, false, false
	p.written, p.finMaybe = 0, false
	p.rcvAdvSet = false
	p.peerMSS = 536
	if p.v6 {
		p.peerMSS = 1220
	}
	if p.synOpt.HasMSS {
		p.peerMSS = int(p.synOpt.MSS)
	}
}

// hook records illegal transitions of t.
func (p *fzPeer) hook(t *TCB) {
	p.visited[t.State()] = true
	t.SetTrace(func(ev TraceEvent) {
		if ev.Kind == TraceState {
			p.visited[ev.To] = true
		}
		if ev.Kind == TraceState && !legalTransition(ev.From, ev.To) {
			p.trans = append(p.trans, fmt.Sprintf("%v → %v (%s)", ev.From, ev.To, ev.Reason))
		}
	})
}

func (p *fzPeer) nextTS() uint32 { p.tsval++; return p.tsval }

// segment builds the segment a record describes, and the raw option
// bytes when the record carries them (they replace seg.Opts on the wire).
func (p *fzPeer) segment(st *fzStep) (seg Segment, raw []byte) {
	o := &seg.Opts
	switch st.kind {
	case fzSeg:
		seg.Seq = p.nxt.Add(uint32(int32(st.seqOff)))
		seg.Ack = p.sndMax.Add(uint32(int32(st.ackOff)))
		seg.Flags, seg.Wnd = st.flags, st.wnd
		if st.opt&0x01 != 0 {
			o.HasTS, o.TSVal = true, p.nextTS()
			if st.opt&0x02 != 0 {
				o.TSVal -= 1 << 20
			}
			if st.opt&0x04 == 0 {
				o.TSEcr = p.tsecr
			}
		}
		for i := range st.nsack {
			start := p.sndMax.Add(-uint32(st.sack[i][0]) * 64)
			o.SACKBlocks[i] = packet.SACKBlock{Start: uint32(start), End: uint32(start.Add(uint32(st.sack[i][1]) * 16))}
		}
		o.NumSACK = st.nsack
		if o.HasTS {
			o.NumSACK = min(o.NumSACK, 3)
		}
		if st.opt&0x40 != 0 {
			o.HasMSS, o.MSS = true, 536+st.wnd%1024
			o.HasWScale, o.WScale = true, uint8(st.seqOff)&15
			o.SACKPermitted = true
		}
		if st.raw != nil {
			raw = make([]byte, (len(st.raw)+3)&^3)
			copy(raw, st.raw)
		}
	case fzQuick:
		b := st.bits
		seg.Seq, seg.Ack, seg.Flags, seg.Wnd = p.nxt, p.sndMax, packet.ACK, 0xffff
		if b&0x01 != 0 {
			seg.Flags |= packet.FIN
		}
		if b&0x02 != 0 {
			seg.Flags |= packet.PSH
		}
		if p.tsOn && b&0x04 == 0 {
			o.HasTS, o.TSVal, o.TSEcr = true, p.nextTS(), p.tsecr
		}
		if b&0x08 != 0 {
			seg.Ack = p.sentAck // a duplicate ACK
		}
		if b&0x10 != 0 {
			seg.Wnd = 0
		}
		if b&0x20 != 0 && p.sackOn && p.sndMax.Sub(seg.Ack) > 2*1448 {
			// The first segment after the ACK was lost; the rest arrived.
			o.NumSACK = 1
			o.SACKBlocks[0] = packet.SACKBlock{Start: uint32(seg.Ack.Add(1448)), End: uint32(p.sndMax)}
		}
	}
	if st.kind == fzQuick && st.bits&0x40 != 0 && p.edgeSet && p.edge.GreaterThan(seg.Seq) {
		// Exactly what the window has room for: the right edge is where
		// bugs live.
		st.plen = int(min(uint32(p.edge-seg.Seq), 8192))
	}
	if st.plen > 0 {
		start := seg.Seq
		if seg.Flags&packet.SYN != 0 {
			start = start.Add(1)
		}
		seg.Payload = make([]byte, st.plen)
		for i := range seg.Payload {
			seg.Payload[i] = fzInByte(start.Add(uint32(i)))
		}
	}
	return seg, raw
}

// sent records that the app side sent seg; a well-formed one (quick)
// moves its next sequence number.
func (p *fzPeer) sent(seg *Segment, quick bool) {
	if seg.Flags&(packet.SYN|packet.ACK|packet.RST) == packet.SYN {
		p.synOpt = seg.Opts // a new SYN: the SYN-ACK answers its options
	}
	if quick {
		p.nxt = seg.Seq.Add(seg.Len())
	}
	if end := seg.Seq.Add(seg.Len()); !p.sentSet || end.GreaterThan(p.sentEnd) {
		p.sentEnd, p.sentSet = end, true
	}
	if seg.Flags&packet.ACK != 0 && seg.Flags&packet.RST == 0 {
		p.sentAck = seg.Ack
	}
}

// checkOut checks one segment the engine (or TCB) sent on this flow.
// ourMSS is the largest segment the sender may build, maxWnd the largest
// window its receive buffer may ever announce.
func (p *fzPeer) checkOut(s *Segment, ourMSS int, maxWnd uint32) error {
	if s.Flags&packet.RST != 0 {
		if s.Flags&packet.ACK != 0 && s.Ack.GreaterThan(p.sentEnd) {
			return fmt.Errorf("RST acknowledges %d, beyond the %d the app sent", s.Ack, p.sentEnd)
		}
		return nil
	}
	if s.Flags&packet.ACK == 0 {
		return fmt.Errorf("segment without ACK")
	}
	if s.Flags&packet.SYN != 0 {
		if s.Flags != packet.SYN|packet.ACK {
			return fmt.Errorf("SYN-ACK with flags %v", s.Flags)
		}
		if s.Seq != p.iss || s.Ack != p.irs.Add(1) || len(s.Payload) != 0 {
			return fmt.Errorf("SYN-ACK seq %d ack %d; want seq %d ack %d, no data", s.Seq, s.Ack, p.iss, p.irs.Add(1))
		}
		if !p.synced {
			p.synced, p.sndMax = true, p.iss.Add(1)
			p.shift, p.tsOn, p.sackOn = 0, s.Opts.HasTS, s.Opts.SACKPermitted
			if s.Opts.HasWScale {
				if !p.synOpt.HasWScale {
					return fmt.Errorf("SYN-ACK offers window scaling the SYN did not")
				}
				p.shift = min(s.Opts.WScale, packet.MaxWScale)
			}
			if (s.Opts.HasTS && !p.synOpt.HasTS) || (s.Opts.SACKPermitted && !p.synOpt.SACKPermitted) {
				return fmt.Errorf("SYN-ACK options %+v not offered by the SYN", s.Opts)
			}
		}
	} else if !p.synced {
		return fmt.Errorf("segment before the SYN-ACK")
	}
	if s.Ack.GreaterThan(p.sentEnd) {
		return fmt.Errorf("acknowledges %d, beyond the %d the app sent", s.Ack, p.sentEnd)
	}
	if p.ackSeen && s.Ack.LessThan(p.lastAck) {
		return fmt.Errorf("ACK went back from %d to %d", p.lastAck, s.Ack)
	}
	if s.Flags&packet.SYN == 0 {
		if err := p.checkData(s, ourMSS); err != nil {
			return err
		}
	}
	// The right edge of the window never moves left (RFC 9293 §3.8.6
	// SHLD-14), except by less than the scale granularity (RFC 7323 §2.4).
	wnd := uint32(s.Wnd)
	if s.Flags&packet.SYN == 0 {
		wnd <<= p.shift
	}
	if wnd > maxWnd {
		return fmt.Errorf("window %d exceeds the largest receive buffer %d", wnd, maxWnd)
	}
	edge := s.Ack.Add(wnd)
	if p.edgeSet && edge.Add(1<<p.shift).LessEq(p.edge) {
		return fmt.Errorf("right edge moved left from %d to %d", p.edge, edge)
	}
	if !p.edgeSet || edge.GreaterThan(p.edge) {
		p.edge, p.edgeSet = edge, true
	}
	p.lastAck, p.ackSeen = s.Ack, true
	p.nxt = p.nxt.Max(s.Ack)
	if s.Opts.HasTS {
		p.tsecr = s.Opts.TSVal
	}
	return nil
}

// checkData checks the sequence space and payload of a non-SYN segment
// against what the application wrote.
func (p *fzPeer) checkData(s *Segment, ourMSS int) error {
	first := p.iss.Add(1)
	limit := first.Add(uint32(p.written))
	if s.Seq.LessThan(p.iss) {
		return fmt.Errorf("seq %d before ISS %d", s.Seq, p.iss)
	}
	end := s.Seq.Add(uint32(len(s.Payload)))
	if len(s.Payload) == 0 && p.finMaybe && end == limit.Add(1) {
		// A pure ACK or keepalive after our FIN: SND.NXT is past it.
		end = limit
	}
	if end.GreaterThan(limit) {
		return fmt.Errorf("data up to %d beyond the %d bytes written (limit %d)", end, p.written, limit)
	}
	if s.Flags&packet.FIN != 0 {
		if !p.finMaybe {
			return fmt.Errorf("FIN though the application did not close")
		}
		if end != limit {
			return fmt.Errorf("FIN at %d, not after the last byte written (%d)", end, limit)
		}
		end = end.Add(1)
	}
	if n := len(s.Payload) + packet.TCPOptionsLen(&s.Opts); len(s.Payload) > 0 && n > min(p.peerMSS, ourMSS) {
		return fmt.Errorf("segment of %d bytes with options exceeds MSS %d", n, min(p.peerMSS, ourMSS))
	}
	off := uint64(uint32(s.Seq - first))
	for i, b := range s.Payload {
		if want := fzOutByte(off + uint64(i)); b != want {
			return fmt.Errorf("payload byte %d (stream offset %d) is %#x, want %#x", i, off+uint64(i), b, want)
		}
	}
	p.sndMax = p.sndMax.Max(end)
	return nil
}

// checkRead checks data the application read.
func (p *fzPeer) checkRead(b []byte) error {
	for i, c := range b {
		if want := fzInByte(p.readNxt.Add(uint32(i))); c != want {
			return fmt.Errorf("read byte %d (seq %d) is %#x, want %#x", i, p.readNxt.Add(uint32(i)), c, want)
		}
	}
	p.readNxt = p.readNxt.Add(uint32(len(b)))
	return nil
}

// checkTCB checks the control block's own sequence variables.
func (p *fzPeer) checkTCB(t *TCB) error {
	if len(p.trans) > 0 {
		return fmt.Errorf("illegal transitions: %v", p.trans)
	}
	if t.State() == Closed {
		return nil
	}
	if !t.sndUna.LessEq(t.sndNxt) || !t.sndNxt.LessEq(t.sndMax) {
		return fmt.Errorf("SND.UNA %d, SND.NXT %d, SND.MAX %d out of order", t.sndUna, t.sndNxt, t.sndMax)
	}
	if fl := uint32(t.sndMax - t.sndUna); fl > uint32(t.sndBuf.len())+2 {
		return fmt.Errorf("%d bytes in flight with %d buffered", fl, t.sndBuf.len())
	}
	if p.rcvAdvSet && t.rcvAdv.LessThan(p.rcvAdv) {
		return fmt.Errorf("RCV.NXT+RCV.WND moved left from %d to %d", p.rcvAdv, t.rcvAdv)
	}
	if t.state.synchronized() {
		p.rcvAdv, p.rcvAdvSet = t.rcvAdv, true
	}
	if w := t.rcvWnd(); w > maxWindowField<<t.rcvShift {
		return fmt.Errorf("RCV.WND %d (RCV.NXT %d, right edge %d) beyond what the window field can carry", w, t.rcvNxt, t.rcvAdv)
	}
	return nil
}
