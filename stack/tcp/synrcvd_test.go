package tcp

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

func TestSynRcvd_SynAckCarriesNegotiatedOptions(t *testing.T) {
	h := newHarness(t)
	h.open(h.peerSyn())
	sa := h.one()
	if sa.Flags != packet.SYN|packet.ACK || sa.Seq != testISS || sa.Ack != testIRS.Add(1) {
		t.Fatalf("SYN-ACK = %v", sa.String())
	}
	o := sa.Opts
	if !o.HasMSS || o.MSS != 1460 {
		t.Errorf("MSS option = %v %d, want 1460", o.HasMSS, o.MSS)
	}
	if !o.HasWScale || o.WScale != 7 { // 4 MiB RecvBufMax needs shift 7
		t.Errorf("wscale = %v %d, want 7", o.HasWScale, o.WScale)
	}
	if !o.SACKPermitted {
		t.Error("SACK-permitted missing")
	}
	if !o.HasTS || o.TSEcr != h.peerTS || o.TSVal != 0x1000 {
		t.Errorf("timestamps = %+v, want TSval 0x1000 TSecr %d", o, h.peerTS)
	}
	if sa.Wnd != 0xffff {
		t.Errorf("SYN-ACK window %d, want 65535 (unscaled, RFC 7323 §2.2)", sa.Wnd)
	}
}

func TestSynRcvd_SynAckOmitsOptionsThePeerDidNotOffer(t *testing.T) {
	h := newHarness(t)
	syn := h.peerSyn()
	syn.Opts = packet.TCPOptions{MSS: 1400, HasMSS: true}
	h.open(syn)
	o := h.one().Opts
	if o.HasWScale || o.SACKPermitted || o.HasTS {
		t.Fatalf("SYN-ACK options %+v, want MSS only", o)
	}
	if h.tcb.MSS() != 1400 {
		t.Errorf("send MSS %d, want 1400", h.tcb.MSS())
	}
}

func TestSynRcvd_SynAckOmitsOptionsDisabledInConfig(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.WindowScale, c.SACK, c.Timestamps = false, false, false })
	h.open(h.peerSyn())
	o := h.one().Opts
	if o.HasWScale || o.SACKPermitted || o.HasTS || !o.HasMSS {
		t.Fatalf("SYN-ACK options %+v, want MSS only", o)
	}
}

func TestSynRcvd_SendMSSIsMinOfPeerAndOurs(t *testing.T) {
	for _, tc := range []struct {
		peer    uint16
		has     bool
		want    int
		comment string
	}{
		{9000, true, 1460, "clamped to ours"},
		{500, true, 500, "peer's smaller MSS"},
		{0, false, 536, "RFC 9293 §3.7.1 default"},
	} {
		h := newHarness(t)
		syn := h.peerSyn()
		syn.Opts.MSS, syn.Opts.HasMSS = tc.peer, tc.has
		h.open(syn)
		if h.tcb.MSS() != tc.want {
			t.Errorf("%s: MSS %d, want %d", tc.comment, h.tcb.MSS(), tc.want)
		}
		if got := h.one().Opts.MSS; got != 1460 {
			t.Errorf("%s: announced MSS %d, want ours (1460)", tc.comment, got)
		}
	}
}

func TestSynRcvd_PeerWindowScaleAbove14UsedAs14(t *testing.T) {
	h := newHarness(t)
	syn := h.peerSyn()
	syn.Opts.WScale = 20
	h.open(syn)
	if h.tcb.sndShift != 14 {
		t.Fatalf("send shift %d, want 14 (RFC 7323 §2.3)", h.tcb.sndShift)
	}
}

func TestSynRcvd_OurWindowScaleFollowsRecvBufMax(t *testing.T) {
	for _, tc := range []struct{ max, want int }{{64 << 10, 1}, {65535, 0}, {1 << 20, 5}, {1 << 30, 14}} {
		h := newHarness(t, func(c *Config) { c.RecvBufSize, c.RecvBufMax = 1024, tc.max })
		h.open(h.peerSyn())
		if got := h.one().Opts.WScale; int(got) != tc.want {
			t.Errorf("RecvBufMax %d: shift %d, want %d", tc.max, got, tc.want)
		}
	}
}

func TestWindowShift_NeedsNoTCBAndTreatsZeroAsDefault(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want uint8
	}{
		{Config{}, 7}, // the 4 MiB default
		{Config{RecvBufSize: 1024, RecvBufMax: 65535}, 0},
		{Config{RecvBufMax: 65535}, 1}, // below the 64 KiB default size
		{Config{RecvBufSize: 1024, RecvBufMax: 65536}, 1},
		{Config{RecvBufSize: 1 << 20, RecvBufMax: 1024}, 5}, // SetDefaults raises Max to Size
		{Config{RecvBufMax: 1 << 31}, 14},                   // RFC 7323 §2.3: at most 14
	} {
		if got := windowShift(&tc.cfg); got != tc.want {
			t.Errorf("windowShift(%+v) = %d, want %d", tc.cfg, got, tc.want)
		}
		c := tc.cfg
		c.SetDefaults()
		if got := windowShift(&c); got != tc.want {
			t.Errorf("after SetDefaults: windowShift = %d, want %d", got, tc.want)
		}
	}
}

func TestSynRcvd_ThirdAckEstablishes(t *testing.T) {
	h := synRcvd(t)
	h.in(h.ack())
	h.none()
	h.wantState(Established)
	if e := h.tcb.Events(); e&EventEstablished == 0 {
		t.Fatalf("events %b lack EventEstablished", e)
	}
	if h.tcb.sndUna != testISS.Add(1) {
		t.Fatalf("SND.UNA %d, want ISS+1", h.tcb.sndUna)
	}
}

func TestSynRcvd_ThirdAckWindowIsScaled(t *testing.T) {
	h := synRcvd(t)
	a := h.ack()
	a.Wnd = 100
	h.in(a)
	if h.tcb.sndWnd != 100<<peerShift {
		t.Fatalf("SND.WND %d, want %d", h.tcb.sndWnd, 100<<peerShift)
	}
}

func TestSynRcvd_DataOnThirdAckIsDelivered(t *testing.T) {
	h := synRcvd(t)
	h.in(h.data([]byte("hello")))
	h.wantState(Established)
	buf := make([]byte, 16)
	n, err := h.tcb.Read(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
}

func TestSynRcvd_FINOnThirdAckGoesToCloseWait(t *testing.T) {
	h := synRcvd(t)
	h.in(h.fin())
	h.wantState(CloseWait)
	wantAck(t, h.one(), h.peerNxt)
}

func TestSynRcvd_UnacceptableAckIsAnsweredWithRST(t *testing.T) {
	for _, ack := range []Seq{testISS, testISS.Add(2), testISS.Add(1 << 20)} {
		h := synRcvd(t)
		h.in(h.ackOf(ack))
		r := h.one()
		if r.Flags != packet.RST || r.Seq != ack {
			t.Fatalf("ack %d: got %v, want RST seq=SEG.ACK", ack, r.String())
		}
		h.wantState(SynReceived)
		h.wantDrop(dropSynRcvdBadAck)
	}
}

func TestSynRcvd_RSTAtRcvNxtClosesWithReason(t *testing.T) {
	h := synRcvd(t)
	h.in(h.rst(h.peerNxt))
	h.none()
	h.wantState(Closed)
	if h.tcb.Reason() != "reset in SYN-RECEIVED" {
		t.Errorf("reason %q", h.tcb.Reason())
	}
	if !errors.Is(h.tcb.Err(), syscall.ECONNRESET) {
		t.Errorf("Err = %v, want ECONNRESET", h.tcb.Err())
	}
	if e := h.tcb.Events(); e&(EventReset|EventClosed) != EventReset|EventClosed {
		t.Errorf("events %b, want Reset|Closed", e)
	}
	if !h.tcb.Done() {
		t.Error("Done = false after reset")
	}
}

func TestSynRcvd_RSTInWindowNotAtRcvNxtGetsChallengeAck(t *testing.T) {
	h := synRcvd(t)
	h.in(h.rst(h.peerNxt.Add(10)))
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(SynReceived)
	h.wantDrop(dropRSTChallenge)
}

func TestSynRcvd_RSTOutsideWindowIsDroppedSilently(t *testing.T) {
	h := synRcvd(t)
	h.in(h.rst(h.peerNxt.Add(1 << 20)))
	h.none()
	h.wantState(SynReceived)
	h.wantDrop(dropRSTOutOfWindow)
}

func TestSynRcvd_RetransmittedSynResendsSynAck(t *testing.T) {
	h := synRcvd(t)
	h.in(h.peerSyn())
	sa := h.one()
	if sa.Flags != packet.SYN|packet.ACK || sa.Seq != testISS {
		t.Fatalf("got %v, want SYN-ACK again", sa.String())
	}
	h.wantState(SynReceived)
}

func TestSynRcvd_NewSynInWindowDropsTheConnection(t *testing.T) {
	h := synRcvd(t)
	syn := h.peerSyn()
	syn.Seq = h.peerNxt.Add(5)
	h.in(syn)
	h.wantState(Closed)
	if h.tcb.Reason() != "SYN in SYN-RECEIVED" {
		t.Fatalf("reason %q", h.tcb.Reason())
	}
}

func TestSynRcvd_SegmentWithoutACKIsDropped(t *testing.T) {
	h := synRcvd(t)
	s := h.ack()
	s.Flags = packet.PSH
	s.Payload = []byte("x")
	h.in(s)
	h.none()
	h.wantState(SynReceived)
	h.wantDrop(dropNoACK)
}

func TestSynRcvd_SynAckRetransmittedWithExponentialBackoff(t *testing.T) {
	h := synRcvd(t)
	rto := time.Second
	for i := range 5 {
		h.advance(rto - time.Millisecond)
		h.none()
		h.advance(time.Millisecond)
		if sa := h.one(); sa.Flags != packet.SYN|packet.ACK {
			t.Fatalf("retry %d: %v, want SYN-ACK", i, sa.String())
		}
		rto *= 2
	}
	if got := h.stats.SynAckRetransmits.Load(); got != 5 {
		t.Errorf("SynAckRetransmits = %d, want 5", got)
	}
}

func TestSynRcvd_GivesUpAfterSynAckRetries(t *testing.T) {
	h := synRcvd(t, func(c *Config) { c.SynAckRetries = 2 })
	h.advance(time.Second)
	h.one()
	h.advance(2 * time.Second)
	h.one()
	h.advance(4 * time.Second)
	h.none()
	h.wantState(Closed)
	if h.tcb.Reason() != "SYN-ACK retransmissions exhausted" || !errors.Is(h.tcb.Err(), syscall.ETIMEDOUT) {
		t.Fatalf("reason %q err %v", h.tcb.Reason(), h.tcb.Err())
	}
	if h.tcb.Deadline() != 0 {
		t.Error("timer still armed after give-up")
	}
}

func TestSynRcvd_ThirdAckStopsSynAckTimer(t *testing.T) {
	h := synRcvd(t)
	h.in(h.ack())
	if h.tcb.Deadline() != 0 {
		t.Fatalf("deadline %v armed in idle ESTABLISHED", h.tcb.Deadline())
	}
	h.advance(time.Minute)
	h.none()
}

func TestSynRcvd_HandshakeGivesRTTSample(t *testing.T) {
	h := synRcvd(t, func(c *Config) { c.Timestamps = false })
	h.advance(50 * time.Millisecond)
	h.in(h.ack())
	if h.tcb.srtt != 50*time.Millisecond {
		t.Fatalf("SRTT %v, want 50ms", h.tcb.srtt)
	}
}

func TestSynRcvd_RTOIs3sAfterSynAckTimeoutWithoutSample(t *testing.T) {
	h := synRcvd(t, func(c *Config) { c.Timestamps = false })
	h.advance(time.Second)
	h.one()
	h.in(h.ack())
	if h.tcb.hasSample || h.tcb.rto != 3*time.Second {
		t.Fatalf("RTO %v sample %v, want 3s without sample (RFC 6298 §5.7)", h.tcb.rto, h.tcb.hasSample)
	}
}

func TestSynRcvd_WriteBeforeEstablishedIsSentAfterThirdAck(t *testing.T) {
	h := synRcvd(t)
	if n, err := h.tcb.Write([]byte("early")); n != 5 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	h.output()
	h.none()
	h.in(h.ack())
	d := h.one()
	if string(d.Payload) != "early" || d.Seq != testISS.Add(1) {
		t.Fatalf("sent %v %q", d.String(), d.Payload)
	}
}

func TestSynRcvd_CloseWriteBeforeEstablishedSendsFINAfter(t *testing.T) {
	h := synRcvd(t)
	h.tcb.CloseWrite()
	h.output()
	h.none()
	h.in(h.ack())
	h.wantState(FinWait1)
	f := h.one()
	if f.Flags&packet.FIN == 0 || f.Seq != testISS.Add(1) {
		t.Fatalf("sent %v, want FIN at ISS+1", f.String())
	}
}

func TestSynRcvd_AbortSendsRST(t *testing.T) {
	h := synRcvd(t)
	h.tcb.Abort()
	h.output()
	r := h.one()
	if r.Flags&packet.RST == 0 || r.Seq != testISS.Add(1) {
		t.Fatalf("sent %v, want RST at SND.NXT", r.String())
	}
	h.wantState(Closed)
	if !h.tcb.Done() {
		t.Error("not Done after the RST went out")
	}
}

func TestSynRcvd_PAWSRejectsOldTimestamp(t *testing.T) {
	h := synRcvd(t)
	a := h.ack()
	a.Opts = packet.TCPOptions{HasTS: true, TSVal: h.peerTS - 1, TSEcr: 0x1000}
	h.in(a)
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(SynReceived)
	h.wantDrop(dropPAWS)
}
