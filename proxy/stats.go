package proxy

import "sync/atomic"

// Stats are the proxy's counters since New.
type Stats struct {
	// TCPAccepted counts flows whose upstream connect succeeded and whose
	// app handshake completed.
	TCPAccepted uint64
	// TCPActive is the number of TCP relays running now.
	TCPActive int64
	// TCPEvented is how many of them run on events (no goroutine while
	// idle; see the proxy's evrelay.go): those between the own engine's
	// Conns and kernel sockets.
	TCPEvented int64
	// TCPPolicyRejected counts flows refused by Options.Policy.
	TCPPolicyRejected uint64
	// TCPRouteRejected and TCPRouteDropped count flows whose Route said
	// reject (a RST) or drop (no answer).
	TCPRouteRejected, TCPRouteDropped uint64
	// TCPSniffed counts flows routed by their first bytes; TCPSniffedName
	// those in which a name was found.
	TCPSniffed, TCPSniffedName uint64
	// TCPRefused counts upstream connects refused (ECONNREFUSED, also a
	// refusal reported by a SOCKS5 or HTTP proxy).
	TCPRefused uint64
	// TCPTimedOut counts upstream connects that did not finish within
	// ConnectTimeout.
	TCPTimedOut uint64
	// TCPDialFailed counts upstream connects that failed otherwise
	// (unreachable, proxy errors, proxy closing).
	TCPDialFailed uint64
	// TCPAcceptFailed counts flows whose upstream connected but whose app
	// had gone before the handshake completed.
	TCPAcceptFailed uint64
	// TCPOpen is the number of TCP flows in progress now: dialing or
	// relaying, each holding (or about to hold) an upstream socket.
	TCPOpen int64
	// TCPLimitRejected counts SYNs answered with a RST because
	// Options.MaxConnections flows were in progress.
	TCPLimitRejected uint64
	// TCPLargeBuffers is the number of 32 KiB relay buffers held now: one
	// per direction in a burst, none for a connection whose reads wait.
	TCPLargeBuffers int64
	// TCPFDExhausted counts upstream dials that failed because the
	// process or the system had no file descriptor left (EMFILE,
	// ENFILE); they are also in TCPDialFailed.
	TCPFDExhausted uint64
	// BytesUp and BytesDown count TCP payload relayed app→upstream and
	// upstream→app.
	BytesUp, BytesDown uint64
	// ResetsFromApp and ResetsFromUpstream count relays ended by a RST
	// from that side.
	ResetsFromApp, ResetsFromUpstream uint64
	// IdleTimeouts and HalfCloseTimeouts count relays aborted by those
	// timeouts.
	IdleTimeouts, HalfCloseTimeouts uint64
	// ClosedByAPI counts flows (TCP and UDP) ended by CloseConnection or
	// CloseAllConnections.
	ClosedByAPI uint64

	// UDPSessions counts UDP sessions (mappings) opened: full-cone ones,
	// each carrying every flow of one app socket through one outbound,
	// and symmetric ones, one per flow. UDPActive is those open now;
	// UDPFlows counts the flows (app socket, destination) relayed.
	UDPSessions uint64
	UDPActive   int64
	UDPFlows    uint64
	// UDPEvicted counts sessions ended at Options.MaxUDPSessions to make
	// room, the least recently used first; UDPIdleTimeouts those ended
	// by Options.UDPIdleTimeout.
	UDPEvicted, UDPIdleTimeouts uint64
	// UDPUnsolicited counts datagrams passed to the app from a remote it
	// had not sent to (endpoint-independent filtering).
	UDPUnsolicited uint64
	// UDPSendErrors counts datagrams an upstream failed to send; the
	// session goes on.
	UDPSendErrors uint64
	// UDPFragmentsDropped and UDPMalformedDropped count datagrams a
	// SOCKS5 relay sent that were dropped: fragments (FRAG ≠ 0, RFC 1928
	// §7, not reassembled) and malformed headers.
	UDPFragmentsDropped, UDPMalformedDropped uint64
	// UDPDropped counts UDP flows not relayed: UDP disabled, refused by
	// policy or by their Route (reject, drop), or dial failed.
	UDPDropped uint64
	// UDPRefused counts the dropped flows a reject route answered with an
	// ICMP port unreachable.
	UDPRefused uint64
	// UDPPacketsUp/Down and UDPBytesUp/Down count datagrams and payload
	// bytes app→upstream and upstream→app.
	UDPPacketsUp, UDPPacketsDown uint64
	UDPBytesUp, UDPBytesDown     uint64
	// UDPPortUnreachable counts ICMP port unreachable reports on upstream
	// sockets; the sessions go on. UDPUnreachableToApp counts those passed
	// on to the app as its own ICMP port unreachable.
	UDPPortUnreachable, UDPUnreachableToApp uint64
}

// counters are the live values behind Stats.
type counters struct {
	tcpAccepted, tcpPolicyRejected, tcpRefused, tcpTimedOut atomic.Uint64
	tcpDialFailed, tcpAcceptFailed                          atomic.Uint64
	tcpRouteRejected, tcpRouteDropped                       atomic.Uint64
	tcpSniffed, tcpSniffedName                              atomic.Uint64
	tcpActive, tcpOpen, tcpEvented                          atomic.Int64
	tcpLimitRejected, tcpFDExhausted                        atomic.Uint64
	bytesUp, bytesDown                                      atomic.Uint64
	resetsFromApp, resetsFromUpstream                       atomic.Uint64
	idleTimeouts, halfCloseTimeouts                         atomic.Uint64
	closedByAPI                                             atomic.Uint64
	udpSessions, udpDropped, udpRefused                     atomic.Uint64
	udpActive                                               atomic.Int64
	udpPacketsUp, udpPacketsDown                            atomic.Uint64
	udpBytesUp, udpBytesDown                                atomic.Uint64
	udpPortUnreachable, udpUnreachableToApp                 atomic.Uint64
	udpFlows, udpEvicted, udpIdleTimeouts, udpUnsolicited   atomic.Uint64
	udpSendErrors, udpFragmentsDropped, udpMalformedDropped atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		TCPAccepted:        c.tcpAccepted.Load(),
		TCPActive:          c.tcpActive.Load(),
		TCPEvented:         c.tcpEvented.Load(),
		TCPOpen:            c.tcpOpen.Load(),
		TCPLimitRejected:   c.tcpLimitRejected.Load(),
		TCPFDExhausted:     c.tcpFDExhausted.Load(),
		TCPPolicyRejected:  c.tcpPolicyRejected.Load(),
		TCPRouteRejected:   c.tcpRouteRejected.Load(),
		TCPRouteDropped:    c.tcpRouteDropped.Load(),
		TCPSniffed:         c.tcpSniffed.Load(),
		TCPSniffedName:     c.tcpSniffedName.Load(),
		TCPRefused:         c.tcpRefused.Load(),
		TCPTimedOut:        c.tcpTimedOut.Load(),
		TCPDialFailed:      c.tcpDialFailed.Load(),
		TCPAcceptFailed:    c.tcpAcceptFailed.Load(),
		BytesUp:            c.bytesUp.Load(),
		BytesDown:          c.bytesDown.Load(),
		ResetsFromApp:      c.resetsFromApp.Load(),
		ResetsFromUpstream: c.resetsFromUpstream.Load(),
		IdleTimeouts:       c.idleTimeouts.Load(),
		HalfCloseTimeouts:  c.halfCloseTimeouts.Load(),
		ClosedByAPI:        c.closedByAPI.Load(),
		UDPSessions:        c.udpSessions.Load(),
		UDPActive:          c.udpActive.Load(),
		UDPDropped:         c.udpDropped.Load(),
		UDPRefused:         c.udpRefused.Load(),
		UDPPacketsUp:       c.udpPacketsUp.Load(),
		UDPPacketsDown:     c.udpPacketsDown.Load(),
		UDPBytesUp:         c.udpBytesUp.Load(),
		UDPBytesDown:       c.udpBytesDown.Load(),
		UDPPortUnreachable: c.udpPortUnreachable.Load(),

		UDPUnreachableToApp: c.udpUnreachableToApp.Load(),
		UDPFlows:            c.udpFlows.Load(),
		UDPEvicted:          c.udpEvicted.Load(),
		UDPIdleTimeouts:     c.udpIdleTimeouts.Load(),
		UDPUnsolicited:      c.udpUnsolicited.Load(),
		UDPSendErrors:       c.udpSendErrors.Load(),
		UDPFragmentsDropped: c.udpFragmentsDropped.Load(),
		UDPMalformedDropped: c.udpMalformedDropped.Load(),
	}
}
