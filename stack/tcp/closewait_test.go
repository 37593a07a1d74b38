package tcp

import (
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/tungate/tungate/internal/packet"
)

func TestCloseWait_WriteStillSendsData(t *testing.T) {
	h := closeWait(t)
	h.tcb.Write([]byte("reply"))
	h.output()
	if d := h.one(); string(d.Payload) != "reply" || d.Ack != h.peerNxt {
		t.Fatalf("sent %v %q", d.String(), d.Payload)
	}
}

func TestCloseWait_ReadReturnsEOF(t *testing.T) {
	h := closeWait(t)
	if _, err := h.tcb.Read(make([]byte, 4)); err != io.EOF {
		t.Fatalf("err %v, want EOF", err)
	}
	if !h.tcb.Readable() {
		t.Fatal("not Readable at EOF")
	}
}

func TestCloseWait_CloseWriteGoesToLastAckWithFIN(t *testing.T) {
	h := lastAck(t)
	h.wantState(LastAck)
}

func TestCloseWait_RetransmittedFINIsAcked(t *testing.T) {
	h := closeWait(t)
	f := h.fin()
	f.Seq = h.tcb.rcvNxt.Add(^uint32(0)) // the same FIN again
	h.peerNxt = h.tcb.rcvNxt
	h.in(f)
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(CloseWait)
}

func TestCloseWait_TextIsIgnored(t *testing.T) {
	h := closeWait(t)
	h.in(h.data([]byte("bogus")))
	if h.tcb.rcvBuf.len() != 0 {
		t.Fatal("data after the peer's FIN delivered")
	}
}

func TestCloseWait_RSTResets(t *testing.T) {
	h := closeWait(t)
	h.in(h.rst(h.peerNxt))
	h.wantState(Closed)
	if !errors.Is(h.tcb.Err(), syscall.ECONNRESET) {
		t.Fatalf("Err %v", h.tcb.Err())
	}
}

func TestCloseWait_CloseSendsFINNotRST(t *testing.T) {
	h := closeWait(t)
	h.tcb.Close()
	h.output()
	if f := h.one(); f.Flags != packet.ACK|packet.FIN {
		t.Fatalf("sent %v, want FIN", f.String())
	}
	h.wantState(LastAck)
}

func TestLastAck_AckOfFINCloses(t *testing.T) {
	h := lastAck(t)
	h.in(h.ack())
	h.none()
	h.wantState(Closed)
	if !h.tcb.Done() || h.tcb.Err() != nil {
		t.Fatalf("Done %v Err %v, want true, nil", h.tcb.Done(), h.tcb.Err())
	}
	if e := h.tcb.Events(); e&EventClosed == 0 || e&EventReset != 0 {
		t.Fatalf("events %b, want Closed without Reset", e)
	}
}

func TestLastAck_AckNotCoveringFINStays(t *testing.T) {
	h := lastAck(t)
	h.in(h.ackOf(h.tcb.sndUna))
	h.wantState(LastAck)
}

func TestLastAck_FINRetransmittedOnTimeout(t *testing.T) {
	h := lastAck(t)
	h.advance(h.tcb.currentRTO())
	if f := h.one(); f.Flags&packet.FIN == 0 {
		t.Fatalf("sent %v, want FIN", f.String())
	}
}

func TestLastAck_GivesUpAfterMaxRetransmits(t *testing.T) {
	h := lastAck(t, func(c *Config) { c.MaxRetransmits = 2 })
	for range 3 {
		h.advance(h.tcb.Deadline().Sub(h.now))
	}
	h.wantState(Closed)
	if !errors.Is(h.tcb.Err(), syscall.ETIMEDOUT) {
		t.Fatalf("Err %v, want ETIMEDOUT", h.tcb.Err())
	}
	if n := len(h.take()); n != 2 {
		t.Fatalf("%d retransmissions, want 2", n)
	}
}

func TestLastAck_RSTCloses(t *testing.T) {
	h := lastAck(t)
	h.in(h.rst(h.peerNxt))
	h.wantState(Closed)
}

func TestClosing_AckOfFINGoesToTimeWait(t *testing.T) {
	h := closing(t)
	h.in(h.ack())
	h.wantState(TimeWait)
}

func TestClosing_AckNotCoveringFINIsIgnored(t *testing.T) {
	h := closing(t)
	h.in(h.ackOf(h.tcb.sndUna))
	h.wantState(Closing)
	h.wantDrop(dropClosingNotFin)
}

func TestClosing_FINIsRetransmitted(t *testing.T) {
	h := closing(t)
	h.advance(h.tcb.currentRTO())
	if f := h.one(); f.Flags&packet.FIN == 0 {
		t.Fatalf("sent %v, want FIN", f.String())
	}
}

func TestClosing_RSTCloses(t *testing.T) {
	h := closing(t)
	h.in(h.rst(h.peerNxt))
	h.wantState(Closed)
}

func TestTimeWait_ExpiresAfter2MSL(t *testing.T) {
	h := timeWait(t, func(c *Config) { c.MSL2 = 10 * time.Second })
	h.advance(10*time.Second - time.Millisecond)
	h.wantState(TimeWait)
	h.advance(time.Millisecond)
	h.wantState(Closed)
	if h.tcb.Err() != nil || !h.tcb.Done() {
		t.Fatalf("Err %v Done %v", h.tcb.Err(), h.tcb.Done())
	}
}

func TestTimeWait_OnlyTheTimeWaitTimerRuns(t *testing.T) {
	h := established(t)
	h.in(h.data([]byte("x"))) // arms the delayed ACK
	h.tcb.CloseWrite()
	h.output()
	h.take()
	h.in(h.fin()) // acks our FIN too
	h.wantState(TimeWait)
	if got := h.tcb.Deadline(); got != h.now.Add(60*time.Second) {
		t.Fatalf("deadline %v, want only 2MSL", got)
	}
}

func TestTimeWait_RetransmittedFINIsAckedAndRestartsTimer(t *testing.T) {
	h := timeWait(t)
	h.advance(30 * time.Second)
	f := h.fin()
	f.Seq = h.tcb.rcvNxt.Add(^uint32(0)) // the same FIN again
	h.peerNxt = h.tcb.rcvNxt
	h.in(f)
	wantAck(t, h.one(), h.tcb.rcvNxt)
	if got := h.tcb.Deadline(); got != h.now.Add(60*time.Second) {
		t.Fatalf("deadline %v, want restarted 2MSL", got)
	}
	h.wantDrop(dropTimeWaitFIN)
}

func TestTimeWait_RSTIsIgnored(t *testing.T) {
	h := timeWait(t)
	h.in(h.rst(h.peerNxt))
	h.wantState(TimeWait)
	h.wantDrop(dropTimeWaitRST)
}

func TestTimeWait_SYNGetsChallengeAck(t *testing.T) {
	h := timeWait(t)
	syn := h.peerSyn()
	syn.Seq = h.peerNxt
	h.in(syn)
	wantAck(t, h.one(), h.peerNxt)
	h.wantState(TimeWait)
}

func TestTimeWait_AcceptsSynWithNewerTimestamp(t *testing.T) {
	h := timeWait(t)
	syn := h.peerSyn()
	syn.Opts.TSVal = h.tcb.tsRecent + 1
	syn.Seq = h.peerNxt.Add(^uint32(1000)) // sequence number alone would refuse
	if !h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("SYN with newer TSval refused (RFC 6191)")
	}
	h.wantState(Closed)
	if h.stats.TimeWaitReuses.Load() != 1 || h.tcb.Reason() != "TIME-WAIT reused by new SYN" {
		t.Fatal("reuse not recorded")
	}
}

func TestTimeWait_RefusesSynWithOlderTimestamp(t *testing.T) {
	h := timeWait(t)
	syn := h.peerSyn()
	syn.Opts.TSVal = h.tcb.tsRecent - 1
	syn.Seq = h.peerNxt.Add(1000)
	if h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("SYN with older TSval accepted")
	}
	h.wantState(TimeWait)
}

func TestTimeWait_EqualTimestampNeedsHigherSequence(t *testing.T) {
	h := timeWait(t)
	syn := h.peerSyn()
	syn.Opts.TSVal = h.tcb.tsRecent
	syn.Seq = h.peerNxt
	if h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("equal TSval and sequence accepted")
	}
	syn.Seq = h.peerNxt.Add(1)
	if !h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("equal TSval with higher sequence refused")
	}
}

func TestTimeWait_WithoutTimestampsSequenceMustBeHigher(t *testing.T) {
	h := timeWait(t, func(c *Config) { c.Timestamps = false })
	syn := h.peerSyn()
	syn.Opts.HasTS = false
	syn.Seq = h.tcb.rcvNxt
	if h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("SYN at RCV.NXT accepted")
	}
	syn.Seq = h.tcb.rcvNxt.Add(1 << 20)
	if !h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("SYN beyond RCV.NXT refused (RFC 9293 §3.6.1)")
	}
}

func TestTimeWait_SynWithoutTimestampFallsBackToSequence(t *testing.T) {
	h := timeWait(t)
	syn := h.peerSyn()
	syn.Opts.HasTS = false
	syn.Seq = h.tcb.rcvNxt.Add(5)
	if !h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("SYN without timestamps and higher sequence refused (RFC 6191 §2)")
	}
}

func TestTimeWait_AcceptsNewSynOnlyInTimeWait(t *testing.T) {
	h := finWait2(t)
	syn := h.peerSyn()
	syn.Seq = h.tcb.rcvNxt.Add(5)
	syn.Opts.TSVal = h.tcb.tsRecent + 10
	if h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("AcceptsNewSyn true in FIN-WAIT-2")
	}
}

func TestTimeWait_SynAckIsNotANewSyn(t *testing.T) {
	h := timeWait(t)
	syn := h.peerSyn()
	syn.Flags |= packet.ACK
	syn.Opts.TSVal = h.tcb.tsRecent + 10
	if h.tcb.AcceptsNewSyn(&syn) {
		t.Fatal("SYN-ACK treated as a new SYN")
	}
}
