// Package packet reads and writes IPv4, IPv6, TCP, UDP and ICMP packets in
// place, without allocating.
//
// Header views (IPv4, IPv6, TCP, UDP, ICMPv4, ICMPv6) are []byte types whose
// methods read and write fields at fixed offsets. They do no bounds checks
// of their own, so a packet is validated once at ingress with ParseIP,
// which returns a Packet of views into the caller's buffer or an error
// naming the defect. TCP options are decoded into a TCPOptions value and
// encoded back with PutTCPOptions. BuildTCP, BuildUDP, BuildEcho and
// EchoReply write complete packets, checksums included, into a caller's
// buffer. Checksum, PseudoHeaderChecksum and the UpdateChecksum helpers
// implement RFC 1071 and RFC 1624.
//
// Nothing in the package keeps a reference to a buffer after a call
// returns, except the slices of the returned Packet, which alias the input.
package packet
