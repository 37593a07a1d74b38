package gateway

import (
	"testing"
	"time"

	"github.com/tungate/tungate/internal/config"
)

func TestCustomOptions_CarryEveryStackCustomSetting(t *testing.T) {
	cfg := config.Default()
	cfg.TUN.MTU = 9000
	c := &cfg.Stack.Custom
	c.SACK, c.Timestamps, c.WindowScale, c.NoDelay, c.TailLossProbe = false, false, false, false, false
	c.ReceiveBufferSize, c.ReceiveBufferMax, c.SendBufferSize = 64<<10, 1<<20, 128<<10
	c.BufferIdle, c.CongestionControl, c.DelayedAck = 3*time.Second, config.CongestionNewReno, 25*time.Millisecond
	c.TimeWait, c.FinWait2Timeout, c.SynAckRetries = 7*time.Second, 9*time.Second, 3
	c.KeepaliveIdle, c.KeepaliveInterval, c.KeepaliveCount = time.Minute, 5*time.Second, 4
	c.SynBacklog, c.PendingBacklog, c.MaxTimeWait = 11, 12, 13
	c.ChallengeAckLimit, c.ChallengeAckGlobalLimit = 14, 0

	o := customOptions(cfg)
	b := o.TCB
	if o.MTU != 9000 || b.SACK || b.Timestamps || b.WindowScale || b.NoDelay || b.TailLossProbe {
		t.Errorf("MTU %d, options SACK %v TS %v WS %v NoDelay %v TLP %v", o.MTU, b.SACK, b.Timestamps, b.WindowScale, b.NoDelay, b.TailLossProbe)
	}
	if b.RecvBufSize != 64<<10 || b.RecvBufMax != 1<<20 || b.SendBufSize != 128<<10 || b.BufferIdle != 3*time.Second {
		t.Errorf("buffers %d/%d/%d idle %v", b.RecvBufSize, b.RecvBufMax, b.SendBufSize, b.BufferIdle)
	}
	if b.CongestionControl != config.CongestionNewReno || b.DelayedAck != 25*time.Millisecond {
		t.Errorf("cc %q delack %v", b.CongestionControl, b.DelayedAck)
	}
	if b.MSL2 != 7*time.Second || b.FinWait2Timeout != 9*time.Second || b.SynAckRetries != 3 {
		t.Errorf("time-wait %v fin-wait-2 %v synack retries %d", b.MSL2, b.FinWait2Timeout, b.SynAckRetries)
	}
	if b.KeepaliveIdle != time.Minute || b.KeepaliveInterval != 5*time.Second || b.KeepaliveCount != 4 {
		t.Errorf("keepalive %v/%v/%d", b.KeepaliveIdle, b.KeepaliveInterval, b.KeepaliveCount)
	}
	if o.SynBacklog != 11 || o.PendingBacklog != 12 || o.MaxTimeWait != 13 {
		t.Errorf("backlogs %d/%d, max time-wait %d", o.SynBacklog, o.PendingBacklog, o.MaxTimeWait)
	}
	if b.ChallengeAckLimit != 14 || o.ChallengeAckGlobalLimit != -1 {
		t.Errorf("challenge ACK limits %d/%d, want 14 and none (-1)", b.ChallengeAckLimit, o.ChallengeAckGlobalLimit)
	}
	if d := customOptions(config.Default()); !d.TCB.TailLossProbe || !d.TCB.SACK || d.TCB.ChallengeAckLimit != 10 || d.ChallengeAckGlobalLimit != 1000 {
		t.Error("defaults: tail loss probe or SACK off, or challenge ACK limits not 10 and 1000")
	}
}
