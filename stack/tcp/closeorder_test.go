package tcp

import (
	"io"
	"testing"

	"github.com/tungate/tungate/internal/packet"
)

// The close order: a FIN that comes with the last data leaves
// with it, in both directions.

func TestConnWriteFIN_SendsTheDataAndTheFINInOneSegment(t *testing.T) {
	h := newPktHarness(t, nil)
	c, iss := h.establish(1000)
	if _, err := c.(*Conn).WriteFIN([]byte("response")); err != nil {
		t.Fatal(err)
	}
	g := h.expectOne("data and FIN")
	if string(g.data) != "response" || g.flags&packet.FIN == 0 || g.seq != iss+1 {
		t.Fatalf("sent flags %v seq %d %q; want the data with FIN at %d", g.flags, g.seq, g.data, iss+1)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after WriteFIN succeeded")
	}
}

func TestConnWriteThenCloseWrite_SendsTwoSegments(t *testing.T) {
	// The control for the test above: what the relay did before.
	h := newPktHarness(t, nil)
	c, _ := h.establish(1000)
	c.Write([]byte("response"))
	c.CloseWrite()
	if gs := h.take(); len(gs) != 2 || gs[0].flags&packet.FIN != 0 || gs[1].flags&packet.FIN == 0 {
		t.Fatalf("sent %+v; want the data, then the FIN alone", gs)
	}
}

func TestConnRead_ReturnsTheLastDataWithEOFWhenTheFINCameWithIt(t *testing.T) {
	h := newPktHarness(t, nil)
	c, iss := h.establish(1000)
	h.send(seg{seq: 1001, ack: iss + 1, flags: packet.ACK | packet.PSH | packet.FIN, data: []byte("request")})
	h.expectOne("ACK of the data and FIN")
	buf := make([]byte, 100)
	if n, err := c.Read(buf); n != 7 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want 7, io.EOF", n, err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestConnRead_DataWithoutFINHasNoEOF(t *testing.T) {
	h := newPktHarness(t, nil)
	c, iss := h.establish(1000)
	h.send(seg{seq: 1001, ack: iss + 1, flags: packet.ACK | packet.PSH, data: []byte("request")})
	buf := make([]byte, 4)
	if n, err := c.Read(buf); n != 4 || err != nil {
		t.Fatalf("Read = %d, %v; want 4, nil", n, err)
	}
	// A partial read of data that has a FIN behind it: EOF only with the
	// last byte.
	h.send(seg{seq: 1008, ack: iss + 1, flags: packet.ACK | packet.FIN})
	if n, err := c.Read(buf[:2]); n != 2 || err != nil {
		t.Fatalf("Read = %d, %v; want 2, nil (one byte still before the FIN)", n, err)
	}
	if n, err := c.Read(buf); n != 1 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want 1, io.EOF", n, err)
	}
}
