package tcp

// Stats is a snapshot of the engine's counters and connection states.
type Stats struct {
	// States counts the connections in each TCP state; Pending counts
	// SYNs waiting for the handler's decision (LISTEN, SYN held).
	States  map[string]int
	Pending int

	PacketsIn, PacketsOut, Malformed, Unsupported, WriteErrors uint64
	ICMPEchoReplies                                            uint64
	// SuperpacketsIn and SuperpacketsOut count the TCP superpackets
	// read and written whole on the offload path (stack.OffloadStack,
	// stack.OffloadWriter); each is one of PacketsIn or PacketsOut.
	SuperpacketsIn, SuperpacketsOut uint64

	SYNs, SYNRetransmitsAbsorbed                     uint64
	Accepted, Rejected, HandlerUndecided             uint64
	CookiesSent, CookiesValid, CookiesInvalid        uint64
	RSTsIgnoredNoFlow, RSTsSentNoFlow, DroppedNoFlow uint64

	ChallengeAcks, ChallengeAcksRateLimited         uint64
	RSTsSent, RSTsReceived                          uint64
	Retransmits, SynAckRetransmits, FastRetransmits uint64
	RetransmittedBytes, LostRetransmits             uint64
	RTOs, DupAcks, OutOfOrder, DroppedSegments      uint64
	PAWSRejected, PersistProbes, KeepalivesSent     uint64
	TLPProbes, TLPRecoveries                        uint64
	TimeWaitReuses, TimeWaitOverflows, Timeouts     uint64
}

// Stats returns the current counters and per-state connection counts.
func (e *Engine) Stats() Stats {
	s := Stats{States: make(map[string]int)}
	e.mu.RLock()
	flows := make([]*flow, 0, len(e.flows))
	for _, f := range e.flows {
		flows = append(flows, f)
	}
	e.mu.RUnlock()
	for _, f := range flows {
		f.mu.Lock()
		switch {
		case f.gone:
		case f.tw != nil:
			s.States[TimeWait.String()]++
		case f.tcb == nil:
			s.Pending++
		default:
			s.States[f.tcb.State().String()]++
		}
		f.mu.Unlock()
	}
	c, ec := &e.counters, &e.ec
	s.PacketsIn, s.PacketsOut = ec.packetsIn.Load(), ec.packetsOut.Load()
	s.Malformed, s.Unsupported, s.WriteErrors = ec.malformed.Load(), ec.unsupported.Load(), ec.writeErrors.Load()
	s.ICMPEchoReplies = ec.icmpEchoReplies.Load()
	s.SuperpacketsIn, s.SuperpacketsOut = ec.superpacketsIn.Load(), ec.superpacketsOut.Load()
	s.SYNs, s.SYNRetransmitsAbsorbed = ec.syns.Load(), ec.synRetransAbsorbed.Load()
	s.Accepted, s.Rejected, s.HandlerUndecided = ec.accepted.Load(), ec.rejected.Load(), ec.handlerUndecided.Load()
	s.CookiesSent, s.CookiesValid, s.CookiesInvalid = ec.cookiesSent.Load(), ec.cookiesValid.Load(), ec.cookiesInvalid.Load()
	s.RSTsIgnoredNoFlow, s.RSTsSentNoFlow, s.DroppedNoFlow = ec.rstsNoFlow.Load(), ec.rstsSentNoFlow.Load(), ec.droppedNoFlow.Load()
	s.ChallengeAcks, s.ChallengeAcksRateLimited = c.ChallengeAcks.Load(), c.ChallengeAcksRateLimited.Load()
	s.RSTsSent, s.RSTsReceived = c.RSTsSent.Load()+ec.rstsSentNoFlow.Load(), c.RSTsReceived.Load()
	s.Retransmits, s.SynAckRetransmits, s.FastRetransmits = c.Retransmits.Load(), c.SynAckRetransmits.Load(), c.FastRetransmits.Load()
	s.RetransmittedBytes, s.LostRetransmits = c.RetransmittedBytes.Load(), c.LostRetransmits.Load()
	s.RTOs, s.DupAcks, s.OutOfOrder, s.DroppedSegments = c.RTOs.Load(), c.DupAcks.Load(), c.OutOfOrder.Load(), c.DroppedSegments.Load()
	s.PAWSRejected, s.PersistProbes, s.KeepalivesSent = c.PAWSRejected.Load(), c.PersistProbes.Load(), c.KeepalivesSent.Load()
	s.TLPProbes, s.TLPRecoveries = c.TLPProbes.Load(), c.TLPRecoveries.Load()
	s.TimeWaitReuses, s.TimeWaitOverflows, s.Timeouts = c.TimeWaitReuses.Load(), ec.timeWaitOverflows.Load(), c.Timeouts.Load()
	return s
}
