package e2e

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/tungate/tungate/internal/netlab"
)

// TestPcapRecordsTraffic runs the gateway with --pcap and checks that the
// file is a pcap (LINKTYPE_RAW) holding the connection's packets.
func TestPcapRecordsTraffic(t *testing.T) {
	for _, kind := range stacks {
		t.Run(kind, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "gw.pcap")
			e := startGateway(t, kind, "--pcap", file)
			addr := e.listen(t, netlab.ServerAddr4+":0", func(c *net.TCPConn) { io.WriteString(c, "hi") })
			c, err := e.dial(t.Context(), addr)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := readAllTimeout(c, 5e9); err != nil || string(b) != "hi" {
				t.Fatalf("read %q, %v", b, err)
			}
			c.Close()
			e.stop(t) // flushes and closes the capture

			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != 101 {
				t.Fatalf("not a LINKTYPE_RAW pcap file (%d bytes)", len(b))
			}
			records := 0
			for off := 24; off+16 <= len(b); records++ {
				off += 16 + int(binary.LittleEndian.Uint32(b[off+8:]))
			}
			// SYN, SYN-ACK, ACK, data, FINs and ACKs: a handful at least.
			if records < 6 {
				t.Fatalf("pcap holds %d packets; want the whole connection", records)
			}
		})
	}
}
