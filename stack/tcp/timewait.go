package tcp

import "github.com/tungate/tungate/internal/clock"

// A connection in TIME-WAIT lasts 2·MSL (60 s by default) after both
// directions ended; at thousands of connections per second that is the
// most common state of all. Once the application is done with the
// connection it needs only what TIME-WAIT processing reads (RFC 9293
// §3.10.7.4 for every segment, RFC 6191 for a new SYN, the 2·MSL timer),
// so the engine keeps a twRecord instead of the TCB: RTT estimation,
// congestion control, loss recovery, receive tuning, the other timers
// and the scratch segment are all idle in TIME-WAIT and are dropped.
// When anything happens to the connection (a segment, the timer), the
// engine thaws the record into a TCB, runs the usual code, and freezes
// it again if it is still in TIME-WAIT: there is one implementation of
// TIME-WAIT, the TCB's.

// twRecord is a TCB in TIME-WAIT, reduced to the fields TIME-WAIT reads.
type twRecord struct {
	cfg         *Config
	stats       *Counters
	traceFn     func(TraceEvent)
	stateReason string
	err         error

	now, tsEpoch, tsRecentAt, timeWaitAt, challengeWindow clock.Time

	iss, irs, sndUna, sndNxt, sndMax, sndWl1, sndWl2, finSeq Seq
	rcvNxt, rcvAdv, oooFinAt, lastAckSent                    Seq

	sndWnd, maxSndWnd, sndMSS, rcvMSS, tsOffset, tsRecent uint32
	sndBufSize, rcvBufSize, challengeCount                int
	sndShift, rcvShift                                    uint8

	passive, finQueued, finSent, finRcvd, oooFin   bool
	readClosed, discardedUnread, orphaned, bufBusy bool
	wsOK, sackOK, tsOK, tsRecentSet                bool
}

// freezeTimeWait returns the record of a connection in TIME-WAIT whose
// idle parts hold nothing a later event could need: no buffered data or
// buffer storage, no timer but 2·MSL, nothing due to send, no probe
// episode, no event undelivered. Otherwise it returns nil and the TCB
// stays as it is.
func (t *TCB) freezeTimeWait() *twRecord {
	if t.state != TimeWait || t.sndBuf.allocated() != 0 || t.sndBuf.len() != 0 ||
		t.rcvBuf.allocated() != 0 || t.rcvBuf.len() != 0 || t.ooo != nil || t.sb != nil || t.scratch != nil ||
		t.events != 0 || t.ackNow || t.ackPending != 0 || t.synDue || t.rstDue || t.probeDue || t.kaDue ||
		t.forceSmall || t.rtxOne || t.dsackDue || t.tlpActive || t.tlpDue || t.tlpRearm {
		return nil
	}
	tm := t.timers
	tm.timeWaitAt = 0
	if tm != (timers{}) {
		return nil
	}
	return &twRecord{
		cfg: t.cfg, stats: t.stats, traceFn: t.traceFn, stateReason: t.stateReason, err: t.err,
		now: t.now, tsEpoch: t.tsEpoch, tsRecentAt: t.tsRecentAt, timeWaitAt: t.timeWaitAt, challengeWindow: t.challengeWindow,
		iss: t.iss, irs: t.irs, sndUna: t.sndUna, sndNxt: t.sndNxt, sndMax: t.sndMax, sndWl1: t.sndWl1, sndWl2: t.sndWl2,
		finSeq: t.finSeq, rcvNxt: t.rcvNxt, rcvAdv: t.rcvAdv, oooFinAt: t.oooFinAt, lastAckSent: t.lastAckSent,
		sndWnd: t.sndWnd, maxSndWnd: t.maxSndWnd, sndMSS: t.sndMSS, rcvMSS: t.rcvMSS, tsOffset: t.tsOffset, tsRecent: t.tsRecent,
		sndBufSize: t.sndBuf.size, rcvBufSize: t.rcvBuf.size, challengeCount: t.challengeCount,
		sndShift: t.sndShift, rcvShift: t.rcvShift,
		passive: t.passive, finQueued: t.finQueued, finSent: t.finSent, finRcvd: t.finRcvd, oooFin: t.oooFin,
		readClosed: t.readClosed, discardedUnread: t.discardedUnread, orphaned: t.orphaned, bufBusy: t.bufBusy,
		wsOK: t.wsOK, sackOK: t.sackOK, tsOK: t.tsOK, tsRecentSet: t.tsRecentSet,
	}
}

// thaw rebuilds the TCB. The parts freezeTimeWait dropped come back as a
// new connection has them: RTT estimator initialised, no congestion
// controller (TIME-WAIT acknowledges nothing new, so none is consulted),
// no recovery, no receive tuning.
func (r *twRecord) thaw() *TCB {
	t := &TCB{
		cfg: r.cfg, stats: r.stats, traceFn: r.traceFn, stateReason: r.stateReason, err: r.err,
		state: TimeWait, now: r.now, tsEpoch: r.tsEpoch, tsRecentAt: r.tsRecentAt, challengeWindow: r.challengeWindow,
		iss: r.iss, irs: r.irs, sndUna: r.sndUna, sndNxt: r.sndNxt, sndMax: r.sndMax, sndWl1: r.sndWl1, sndWl2: r.sndWl2,
		finSeq: r.finSeq, rcvNxt: r.rcvNxt, rcvAdv: r.rcvAdv, oooFinAt: r.oooFinAt, lastAckSent: r.lastAckSent,
		sndWnd: r.sndWnd, maxSndWnd: r.maxSndWnd, sndMSS: r.sndMSS, rcvMSS: r.rcvMSS, tsOffset: r.tsOffset, tsRecent: r.tsRecent,
		sndBuf: newRing(r.sndBufSize), rcvBuf: newRing(r.rcvBufSize), challengeCount: r.challengeCount,
		sndShift: r.sndShift, rcvShift: r.rcvShift,
		passive: r.passive, finQueued: r.finQueued, finSent: r.finSent, finRcvd: r.finRcvd, oooFin: r.oooFin,
		readClosed: r.readClosed, discardedUnread: r.discardedUnread, orphaned: r.orphaned, bufBusy: r.bufBusy,
		wsOK: r.wsOK, sackOK: r.sackOK, tsOK: r.tsOK, tsRecentSet: r.tsRecentSet,
		recovery: recovery{burst: -1},
	}
	t.timeWaitAt = r.timeWaitAt
	t.rtt.init(r.cfg)
	return t
}
