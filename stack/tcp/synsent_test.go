package tcp

import (
	"testing"

	"github.com/tungate/tungate/internal/packet"
)

// synSent returns a harness around an active open with its SYN taken.
func synSent(t *testing.T) (*harness, Segment) {
	t.Helper()
	h := newHarness(t)
	h.tcb = NewSynSent(&h.cfg, testISS, 7, h.now)
	h.tcb.SetTrace(func(e TraceEvent) { e.Seg = nil; h.traces = append(h.traces, e) })
	h.output()
	return h, h.one()
}

func TestSynSent_SYNOffersEveryEnabledOption(t *testing.T) {
	_, syn := synSent(t)
	o := syn.Opts
	if syn.Flags != packet.SYN || syn.Seq != testISS || !o.HasMSS || !o.HasWScale || !o.SACKPermitted || !o.HasTS || o.TSEcr != 0 {
		t.Fatalf("SYN %v opts %+v", syn.String(), o)
	}
}

func TestSynSent_BadAckIsAnsweredWithRST(t *testing.T) {
	h, _ := synSent(t)
	h.in(Segment{Seq: testIRS, Ack: testISS, Flags: packet.SYN | packet.ACK, Wnd: 1000})
	if r := h.one(); r.Flags != packet.RST || r.Seq != testISS {
		t.Fatalf("sent %v, want RST seq=SEG.ACK", r.String())
	}
	h.wantState(SynSent)
	h.wantDrop(dropSynSentBadAck)
}

func TestSynSent_RSTWithoutAckIsIgnored(t *testing.T) {
	h, _ := synSent(t)
	h.in(Segment{Seq: testIRS, Flags: packet.RST})
	h.none()
	h.wantState(SynSent)
	h.wantDrop(dropSynSentRST)
}

func TestSynSent_SynAckEstablishesAndAcks(t *testing.T) {
	h, _ := synSent(t)
	sa := Segment{Seq: testIRS, Ack: testISS.Add(1), Flags: packet.SYN | packet.ACK, Wnd: 5000,
		Opts: packet.TCPOptions{MSS: 1000, HasMSS: true, TSVal: 55, HasTS: true, TSEcr: 7}}
	h.in(sa)
	h.wantState(Established)
	a := h.one()
	wantAck(t, a, testIRS.Add(1))
	if a.Opts.HasTS != true || a.Opts.TSEcr != 55 {
		t.Fatalf("ACK options %+v", a.Opts)
	}
	if h.tcb.wsOK || h.tcb.sackOK || h.tcb.MSS() != 1000 || h.tcb.sndWnd != 5000 {
		t.Fatalf("negotiated ws %v sack %v mss %d wnd %d", h.tcb.wsOK, h.tcb.sackOK, h.tcb.MSS(), h.tcb.sndWnd)
	}
	if e := h.tcb.Events(); e&EventEstablished == 0 {
		t.Fatal("no EventEstablished")
	}
}

func TestSynSent_SYNIsRetransmittedWithBackoff(t *testing.T) {
	h, _ := synSent(t)
	h.advance(h.tcb.Deadline().Sub(h.now))
	if s := h.one(); s.Flags != packet.SYN {
		t.Fatalf("sent %v, want SYN", s.String())
	}
	if d := h.tcb.Deadline().Sub(h.now); d != 2*h.cfg.InitialRTO {
		t.Fatalf("next retry in %v, want doubled", d)
	}
}

func TestNewFromCookie_IsEstablishedWithCookieOptions(t *testing.T) {
	h := newHarness(t)
	ack := Segment{Seq: testIRS.Add(1), Ack: testISS.Add(1), Flags: packet.ACK, Wnd: 100,
		Opts: packet.TCPOptions{HasTS: true, TSVal: 99, TSEcr: 12345}}
	tcb := NewFromCookie(&h.cfg, &ack, testISS, testIRS, 1400, 7, true, 0, h.now)
	if tcb.State() != Established || tcb.MSS() != 1400 || !tcb.wsOK || !tcb.sackOK || !tcb.tsOK {
		t.Fatalf("state %v mss %d ws %v sack %v ts %v", tcb.State(), tcb.MSS(), tcb.wsOK, tcb.sackOK, tcb.tsOK)
	}
	if tcb.sndWnd != 100<<7 || tcb.tsRecent != 99 || tcb.rcvNxt != testIRS.Add(1) || tcb.sndUna != testISS.Add(1) {
		t.Fatalf("wnd %d tsRecent %d rcvNxt %d sndUna %d", tcb.sndWnd, tcb.tsRecent, tcb.rcvNxt, tcb.sndUna)
	}
	if n, err := tcb.Write([]byte("x")); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
}

func TestNewFromCookie_WithoutWindowScale(t *testing.T) {
	h := newHarness(t)
	ack := Segment{Seq: testIRS.Add(1), Ack: testISS.Add(1), Flags: packet.ACK, Wnd: 100}
	tcb := NewFromCookie(&h.cfg, &ack, testISS, testIRS, 536, -1, false, 0, h.now)
	if tcb.wsOK || tcb.sndWnd != 100 || tcb.tsOK || tcb.sackOK {
		t.Fatalf("ws %v wnd %d ts %v sack %v", tcb.wsOK, tcb.sndWnd, tcb.tsOK, tcb.sackOK)
	}
}

// TestSynSent_SYNWithoutAckIsASimultaneousOpen: RFC 9293 §3.10.7.3
// fourth step: a SYN without ACK in SYN-SENT moves to SYN-RECEIVED and
// is answered with SYN-ACK.
func TestSynSent_SYNWithoutAckIsASimultaneousOpen(t *testing.T) {
	h, _ := synSent(t)
	h.in(Segment{Seq: testIRS, Flags: packet.SYN, Wnd: 1000})
	h.wantState(SynReceived)
	sa := h.one()
	if sa.Flags != packet.SYN|packet.ACK || sa.Seq != testISS || sa.Ack != testIRS.Add(1) {
		t.Fatalf("sent %v, want SYN-ACK seq=ISS ack=IRS+1", sa.String())
	}
}
