package packet

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

// hexBytes decodes a hex dump such as tcpdump -x prints: an optional
// "0x0010:" offset per line, then groups of hex digits.
func hexBytes(t testing.TB, dump string) []byte {
	t.Helper()
	var sb strings.Builder
	for line := range strings.Lines(dump) {
		if i := strings.Index(line, ":"); i >= 0 {
			line = line[i+1:]
		}
		sb.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		t.Fatalf("bad hex dump: %v", err)
	}
	return b
}

var (
	cli4 = netip.MustParseAddrPort("198.18.0.1:42094")
	srv4 = netip.MustParseAddrPort("198.19.0.2:80")
	cli6 = netip.MustParseAddrPort("[2001:2::1]:51000")
	srv6 = netip.MustParseAddrPort("[2001:2::2]:443")
)

// buildTCP builds a TCP packet or fails the test.
func buildTCP(t testing.TB, h TCPHeader, payload []byte) []byte {
	t.Helper()
	b := make([]byte, 2048)
	n, err := BuildTCP(b, h, payload)
	if err != nil {
		t.Fatalf("BuildTCP: %v", err)
	}
	return b[:n]
}

// buildUDP builds a UDP packet or fails the test.
func buildUDP(t testing.TB, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	b := make([]byte, 2048)
	n, err := BuildUDP(b, UDPHeader{Src: src, Dst: dst}, payload)
	if err != nil {
		t.Fatalf("BuildUDP: %v", err)
	}
	return b[:n]
}

// buildEcho builds an ICMP echo packet or fails the test.
func buildEcho(t testing.TB, h EchoHeader, payload []byte) []byte {
	t.Helper()
	b := make([]byte, 2048)
	n, err := BuildEcho(b, h, payload)
	if err != nil {
		t.Fatalf("BuildEcho: %v", err)
	}
	return b[:n]
}

// mustParse parses b or fails the test.
func mustParse(t testing.TB, b []byte) Packet {
	t.Helper()
	p, err := ParseIP(b)
	if err != nil {
		t.Fatalf("ParseIP: %v", err)
	}
	return p
}
