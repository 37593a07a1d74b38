package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tungate/tungate/stack"
)

// SniffResult says what the first bytes of a flow revealed.
type SniffResult uint8

const (
	// SniffMore: not enough bytes yet to tell.
	SniffMore SniffResult = iota
	// SniffFound: a domain was found.
	SniffFound
	// SniffNone: neither a TLS ClientHello with a server name nor an HTTP
	// request with a Host; more bytes will not change that.
	SniffNone
)

// SniffDomain looks for the name the app asked for in the first bytes it
// sent: the server_name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066
// §3) or the Host header of an HTTP/1 request (RFC 9110 §7.2). The domain
// is lower-cased, without a port.
func SniffDomain(b []byte) (string, SniffResult) {
	if len(b) == 0 {
		return "", SniffMore
	}
	if b[0] == 0x16 {
		return sniffTLS(b)
	}
	return sniffHTTP(b)
}

// sniffTLS reads the server_name of a ClientHello in the first record.
func sniffTLS(b []byte) (string, SniffResult) {
	if len(b) < 5 {
		return "", SniffMore
	}
	if b[1] != 3 { // record version 3.x
		return "", SniffNone
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if len(b) < 5+n {
		return "", SniffMore
	}
	r := reader(b[5 : 5+n])
	if typ, ok := r.u8(); !ok || typ != 1 { // client_hello
		return "", SniffNone
	}
	hello, ok := r.sub(3)
	if !ok {
		return "", SniffNone // a ClientHello over several records: rare, not sniffed
	}
	if !hello.skip(2+32) || !hello.skipVec(1) || !hello.skipVec(2) || !hello.skipVec(1) {
		return "", SniffNone // version, random, session id, cipher suites, compression
	}
	exts, ok := hello.sub(2)
	if !ok {
		return "", SniffNone
	}
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		ext, ok2 := exts.sub(2)
		if !ok1 || !ok2 {
			return "", SniffNone
		}
		if typ != 0 { // server_name
			continue
		}
		list, ok := ext.sub(2)
		for ok && len(list) > 0 {
			kind, ok1 := list.u8()
			name, ok2 := list.sub(2)
			if !ok1 || !ok2 {
				break
			}
			if kind == 0 && validName(string(name)) { // host_name
				return strings.ToLower(string(name)), SniffFound
			}
		}
		return "", SniffNone
	}
	return "", SniffNone
}

// httpMethods start the requests sniffHTTP reads.
var httpMethods = []string{"GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// sniffHTTP reads the Host header of an HTTP/1 request head.
func sniffHTTP(b []byte) (string, SniffResult) {
	method := false
	for _, m := range httpMethods {
		k := min(len(b), len(m))
		if string(b[:k]) == m[:k] {
			method = len(b) >= len(m)
			if !method {
				return "", SniffMore
			}
			break
		}
	}
	if !method {
		return "", SniffNone
	}
	head, complete := b, false
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		head, complete = b[:i+2], true
	}
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(name), "host") {
			continue
		}
		host := strings.TrimSpace(string(value))
		if h, _, ok := strings.Cut(host, ":"); ok && !strings.HasPrefix(host, "[") {
			host = h
		}
		if validName(host) {
			return strings.ToLower(host), SniffFound
		}
		return "", SniffNone
	}
	if complete {
		return "", SniffNone
	}
	return "", SniffMore
}

// validName accepts what a domain matcher can match: letters, digits,
// '-', '_' and dots, not an IP literal.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			letter = true
		case '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return letter
}

// reader is a TLS-vector parser over a byte slice.
type reader []byte

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

// sub reads a vector whose length takes lenBytes bytes.
func (r *reader) sub(lenBytes int) (reader, bool) {
	if len(*r) < lenBytes {
		return nil, false
	}
	n := 0
	for _, c := range (*r)[:lenBytes] {
		n = n<<8 | int(c)
	}
	*r = (*r)[lenBytes:]
	if len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skipVec(lenBytes int) bool {
	_, ok := r.sub(lenBytes)
	return ok
}

// sniffBufSize bounds what a flow may send before it is routed: a
// ClientHello with post-quantum key shares is under 2 KB, a request head
// rarely above 8 KB.
const sniffBufSize = 16 << 10

// handleSniffed routes a flow by its first bytes: handshake, read, route,
// dial, then relay with the bytes read sent upstream first.
func (p *Proxy) handleSniffed(ctx context.Context, req stack.Request, id stack.FlowID, sniff Route) (detached bool) {
	conn, err := p.accept(ctx, req, id)
	if err != nil {
		p.stats.tcpAcceptFailed.Add(1)
		p.log.Debug("tcp accept failed", "flow", id, "err", err)
		return false
	}
	first, domain := p.sniff(conn)
	p.stats.tcpSniffed.Add(1)
	if domain != "" {
		p.stats.tcpSniffedName.Add(1)
	}
	rt := sniff.Sniff(domain)
	cid := p.conns.newID()
	p.emit(Event{Flow: id, Kind: EventRoute, Route: rt, Conn: cid})
	p.log.Debug("tcp sniffed", "flow", id, "domain", domain, "route", rt.String())
	switch rt.Action {
	case ActionReject, ActionDrop:
		if rt.Action == ActionReject {
			p.stats.tcpRouteRejected.Add(1)
		} else {
			p.stats.tcpRouteDropped.Add(1)
		}
		p.refuseSniffed(id, conn, fmt.Errorf("proxy: %v after sniffing", rt))
		return false
	}
	up, err := p.dialTCP(ctx, id, rt)
	if err != nil {
		p.countDialFailure(err)
		p.log.Debug("tcp dial after sniffing failed", "flow", id, "err", err)
		p.refuseSniffed(id, conn, err)
		return false
	}
	if len(first) > 0 {
		if _, err := up.Write(first); err != nil {
			p.abort(id, SideUpstream, up)
			p.refuseSniffed(id, conn, err)
			return false
		}
		p.stats.bytesUp.Add(uint64(len(first)))
	}
	p.stats.tcpAccepted.Add(1)
	e := p.newEntry(cid, "tcp", id, rt, conn, nil)
	e.up.Add(uint64(len(first))) // sent upstream above
	return p.relay(ctx, e, conn, up)
}

// refuseSniffed ends a sniffed flow that is not relayed: its handshake
// was completed, so the refusal is a RST (an abort), reported as the
// flow's rejection.
func (p *Proxy) refuseSniffed(id stack.FlowID, conn stack.Conn, err error) {
	p.abort(id, SideApp, conn)
	p.emit(Event{Flow: id, Kind: EventReject, Err: err})
}

// sniff reads from conn until the first bytes name a domain, cannot, or
// the sniff timeout passes; it returns what it read.
func (p *Proxy) sniff(conn net.Conn) ([]byte, string) {
	_ = conn.SetReadDeadline(time.Now().Add(p.sniffTimeout))
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 4<<10)
	for len(buf) < sniffBufSize {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := conn.Read(buf[len(buf):min(cap(buf), sniffBufSize)])
		buf = buf[:len(buf)+n]
		if d, r := SniffDomain(buf); r != SniffMore {
			return buf, d
		}
		if err != nil {
			break // timeout, or the app closed: relay what there is
		}
	}
	return buf, ""
}
