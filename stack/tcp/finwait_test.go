package tcp

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

func TestFinWait1_FINFollowsPendingDataInOneSegment(t *testing.T) {
	h := established(t)
	h.tcb.Write([]byte("tail"))
	h.tcb.CloseWrite()
	h.output()
	f := h.one()
	if f.Flags != packet.ACK|packet.PSH|packet.FIN || string(f.Payload) != "tail" {
		t.Fatalf("sent %v %q, want data+FIN", f.String(), f.Payload)
	}
	if h.tcb.finSeq != testISS.Add(5) {
		t.Fatalf("FIN seq %d, want ISS+5", h.tcb.finSeq)
	}
}

func TestFinWait1_FINOccupiesOneSequenceNumber(t *testing.T) {
	h := finWait1(t)
	if h.tcb.sndMax != testISS.Add(2) {
		t.Fatalf("SND.NXT %d after FIN, want ISS+2", h.tcb.sndMax)
	}
}

func TestFinWait1_AckOfFINGoesToFinWait2(t *testing.T) {
	h := finWait1(t)
	h.in(h.ack())
	h.none()
	h.wantState(FinWait2)
	if h.tcb.rtoAt != 0 {
		t.Fatal("retransmission timer armed after the FIN was acknowledged")
	}
}

func TestFinWait1_AckBelowFINStaysInFinWait1(t *testing.T) {
	h := established(t)
	h.tcb.Write([]byte("abc"))
	h.tcb.CloseWrite()
	h.output()
	h.one()
	h.in(h.ackOf(testISS.Add(4))) // the data, not the FIN
	h.wantState(FinWait1)
}

func TestFinWait1_FINIsRetransmittedUntilAcked(t *testing.T) {
	h := finWait1(t)
	rto := h.tcb.currentRTO()
	for i := range 3 {
		h.advance(rto)
		f := h.one()
		if f.Flags&packet.FIN == 0 || f.Seq != testISS.Add(1) {
			t.Fatalf("retry %d: %v, want FIN at ISS+1", i, f.String())
		}
		rto *= 2
	}
	h.in(h.ack())
	h.wantState(FinWait2)
	h.advance(time.Hour)
	h.none()
}

func TestFinWait1_PeerFINWithoutAckOfOursGoesToClosing(t *testing.T) {
	h := closing(t) // the fixture asserts the transition
	h.wantState(Closing)
}

func TestFinWait1_PeerFINAckingOursGoesToTimeWait(t *testing.T) {
	h := finWait1(t)
	h.in(h.fin())
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(TimeWait)
}

func TestFinWait1_DataIsStillDelivered(t *testing.T) {
	h := finWait1(t)
	h.in(h.data([]byte("more")))
	buf := make([]byte, 8)
	if n, err := h.tcb.Read(buf); string(buf[:n]) != "more" || err != nil {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
}

func TestFinWait1_RSTResets(t *testing.T) {
	h := finWait1(t)
	h.in(h.rst(h.peerNxt))
	h.wantState(Closed)
	if !errors.Is(h.tcb.Err(), syscall.ECONNRESET) {
		t.Fatalf("Err %v", h.tcb.Err())
	}
}

func TestFinWait1_WriteFailsWithErrClosed(t *testing.T) {
	h := finWait1(t)
	if _, err := h.tcb.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("err %v", err)
	}
}

func TestFinWait2_DataIsDeliveredAndAcked(t *testing.T) {
	h := finWait2(t)
	h.in(h.data(pattern(0, 1448)))
	h.in(h.data(pattern(0, 1448)))
	wantAck(t, h.one(), h.peerNxt)
	if h.tcb.rcvBuf.len() != 2896 {
		t.Fatal("data not delivered in FIN-WAIT-2")
	}
}

func TestFinWait2_FINGoesToTimeWait(t *testing.T) {
	h := timeWait(t)
	h.wantState(TimeWait)
	if e := h.tcb.Events(); e&EventPeerFIN == 0 {
		t.Fatal("no EventPeerFIN")
	}
}

func TestFinWait2_NoTimeoutAfterCloseWriteOnly(t *testing.T) {
	h := finWait2(t)
	if h.tcb.Deadline() != 0 {
		t.Fatalf("deadline %v: half-closed FIN-WAIT-2 must wait for the peer", h.tcb.Deadline())
	}
}

func TestFinWait2_TimeoutAfterCloseClosesTheConnection(t *testing.T) {
	h := finWait2(t, func(c *Config) { c.FinWait2Timeout = 30 * time.Second })
	h.tcb.Close()
	h.output() // as the engine does after every call of the application
	h.advance(30*time.Second - time.Millisecond)
	h.wantState(FinWait2)
	h.advance(time.Millisecond)
	h.none()
	h.wantState(Closed)
	if h.tcb.Reason() != "FIN-WAIT-2 timeout" {
		t.Fatalf("reason %q", h.tcb.Reason())
	}
}

// TestFinWait2_CloseLongAfterTheLastSegmentArmsFromNow: the timeout runs
// from the Close, not from the last segment or timer the TCB saw.
func TestFinWait2_CloseLongAfterTheLastSegmentArmsFromNow(t *testing.T) {
	h := finWait2(t, func(c *Config) { c.FinWait2Timeout = 30 * time.Second })
	h.now = h.now.Add(20 * time.Second) // idle: no segment, no timer
	h.tcb.Close()
	h.output()
	if got, want := h.tcb.Deadline(), h.now.Add(30*time.Second); got != want {
		t.Fatalf("deadline %v, want %v: 30s after the Close", got, want)
	}
}

func TestFinWait2_TimeoutArmedWhenClosedBeforeReachingIt(t *testing.T) {
	h := established(t, func(c *Config) { c.FinWait2Timeout = 10 * time.Second })
	h.tcb.Close()
	h.output()
	h.one()
	h.in(h.ack())
	h.wantState(FinWait2)
	if got := h.tcb.Deadline(); got != h.now.Add(10*time.Second) {
		t.Fatalf("deadline %v, want now+10s", got)
	}
}

func TestFinWait2_DataAfterCloseResets(t *testing.T) {
	h := finWait2(t)
	h.tcb.Close()
	h.in(h.data([]byte("late")))
	r := h.one()
	if r.Flags&packet.RST == 0 {
		t.Fatalf("sent %v, want RST (RFC 1122 §4.2.2.13)", r.String())
	}
	h.wantState(Closed)
	h.wantDrop(dropDataAfterClose)
}

func TestFinWait2_RSTResets(t *testing.T) {
	h := finWait2(t)
	h.in(h.rst(h.peerNxt))
	h.wantState(Closed)
}

func TestFinWait2_SYNGetsChallengeAck(t *testing.T) {
	h := finWait2(t)
	syn := h.peerSyn()
	syn.Seq = h.peerNxt
	h.in(syn)
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(FinWait2)
}
