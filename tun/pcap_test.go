package tun_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tungate/tungate/tun"
	"github.com/tungate/tungate/tun/tuntest"
)

type pcapFile struct {
	magic, snaplen, linktype uint32
	major, minor             uint16
	records                  []pcapRecord
}

type pcapRecord struct {
	ts       time.Time
	origLen  int
	captured []byte
}

// readPcap parses a little-endian classic pcap stream.
func readPcap(t *testing.T, b []byte) pcapFile {
	t.Helper()
	le := binary.LittleEndian
	if len(b) < 24 {
		t.Fatalf("pcap stream of %d bytes has no file header", len(b))
	}
	f := pcapFile{
		magic: le.Uint32(b[0:]), major: le.Uint16(b[4:]), minor: le.Uint16(b[6:]),
		snaplen: le.Uint32(b[16:]), linktype: le.Uint32(b[20:]),
	}
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("truncated record header: %d bytes left", len(b))
		}
		incl := int(le.Uint32(b[8:]))
		if len(b) < 16+incl {
			t.Fatalf("record claims %d bytes, %d left", incl, len(b)-16)
		}
		f.records = append(f.records, pcapRecord{
			ts:       time.Unix(int64(le.Uint32(b[0:])), int64(le.Uint32(b[4:]))*1000),
			origLen:  int(le.Uint32(b[12:])),
			captured: b[16 : 16+incl],
		})
		b = b[16+incl:]
	}
	return f
}

// tapTraffic reads in through a tap on w and then writes out through it.
func tapTraffic(t *testing.T, w io.Writer, in, out [][]byte) (*tun.PcapDevice, *tuntest.Device) {
	t.Helper()
	inner := tuntest.New(1500)
	tap := tun.WithPcap(inner, w, nil)
	for _, p := range in {
		inner.Inject(p)
	}
	bufs := make([][]byte, len(in))
	for i := range bufs {
		bufs[i] = make([]byte, tun.Headroom+1500)
	}
	if n, err := tap.Read(bufs, make([]int, len(bufs)), tun.Headroom); n != len(in) || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	var wbufs [][]byte
	for _, p := range out {
		wbufs = append(wbufs, withHeadroom(p))
	}
	if n, err := tap.Write(wbufs, tun.Headroom); n != len(out) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	return tap, inner
}

func mixedPackets(t *testing.T) (in, out [][]byte) {
	v4 := udpPacket(t, netip.MustParseAddrPort("198.18.0.1:5000"), netip.MustParseAddrPort("198.19.0.2:53"), []byte("query"))
	v6 := udpPacket(t, netip.MustParseAddrPort("[2001:2::1]:5001"), netip.MustParseAddrPort("[2001:2::2]:53"), []byte("query6"))
	reply := udpPacket(t, netip.MustParseAddrPort("198.19.0.2:53"), netip.MustParseAddrPort("198.18.0.1:5000"), []byte("answer"))
	return [][]byte{v4, v6}, [][]byte{reply}
}

func TestWithPcap_WritesClassicPcapOfReadAndWrittenPackets(t *testing.T) {
	var buf bytes.Buffer
	inner := tuntest.New(1500)
	tap := tun.WithPcap(inner, &buf, nil)
	clock := time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.UTC)
	tun.SetPcapClock(tap, func() time.Time { return clock })
	in, out := mixedPackets(t)
	for _, p := range in {
		inner.Inject(p)
	}
	bufs := [][]byte{make([]byte, tun.Headroom+1500), make([]byte, tun.Headroom+1500)}
	if n, err := tap.Read(bufs, make([]int, 2), tun.Headroom); n != 2 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if _, err := tap.Write([][]byte{withHeadroom(out[0])}, tun.Headroom); err != nil {
		t.Fatal(err)
	}

	f := readPcap(t, buf.Bytes())
	if f.magic != 0xa1b2c3d4 || f.major != 2 || f.minor != 4 || f.snaplen != 65535 || f.linktype != 101 {
		t.Fatalf("file header = %+v, want magic a1b2c3d4 v2.4 snaplen 65535 linktype 101", f)
	}
	want := append(in, out...)
	if len(f.records) != len(want) {
		t.Fatalf("%d records, want %d", len(f.records), len(want))
	}
	for i, r := range f.records {
		if !bytes.Equal(r.captured, want[i]) || r.origLen != len(want[i]) {
			t.Errorf("record %d = %x (orig %d), want %x", i, r.captured, r.origLen, want[i])
		}
		if !r.ts.Equal(clock.Truncate(time.Microsecond)) {
			t.Errorf("record %d time %v, want %v at microsecond precision", i, r.ts.UTC(), clock)
		}
	}
}

func TestWithPcap_TruncatesPacketsToSnaplen(t *testing.T) {
	var buf bytes.Buffer
	tap := tun.WithPcap(tuntest.New(1500), &buf, nil)
	big := withHeadroom(make([]byte, 70000))
	if _, err := tap.Write([][]byte{big}, tun.Headroom); err != nil {
		t.Fatal(err)
	}
	r := readPcap(t, buf.Bytes()).records
	if len(r) != 1 || len(r[0].captured) != 65535 || r[0].origLen != 70000 {
		t.Fatalf("records = %d, captured %d, orig %d; want 1, 65535, 70000", len(r), len(r[0].captured), r[0].origLen)
	}
}

// failingWriter accepts limit bytes, then fails every write.
type failingWriter struct {
	limit, writes int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.writes++
	if len(p) > w.limit {
		return 0, errors.New("disk full")
	}
	w.limit -= len(p)
	return len(p), nil
}

func TestWithPcap_WriteErrorIsLoggedOnceAndTrafficContinues(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	sink := &failingWriter{limit: 24} // just the file header
	inner := tuntest.New(1500)
	tap := tun.WithPcap(inner, sink, log)
	pkt := testPackets(t, 1)[0]
	for i := range 3 {
		if n, err := tap.Write([][]byte{withHeadroom(pkt)}, tun.Headroom); n != 1 || err != nil {
			t.Fatalf("write %d through a broken tap = %d, %v; want 1, nil", i, n, err)
		}
	}
	if len(inner.Outbound()) != 3 {
		t.Fatalf("device got %d packets, want 3", len(inner.Outbound()))
	}
	if tap.Err() == nil {
		t.Fatal("Err() = nil after the stream failed")
	}
	if sink.writes != 2 {
		t.Fatalf("stream written %d times, want 2 (header, then the failing record only)", sink.writes)
	}
	if c := strings.Count(logs.String(), "pcap tap disabled"); c != 1 {
		t.Fatalf("logged %d times, want once:\n%s", c, logs.String())
	}
}

func TestWithPcap_TsharkDecodesIPv4AndIPv6(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed")
	}
	path := filepath.Join(t.TempDir(), "tap.pcap")
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	in, out := mixedPackets(t)
	tap, _ := tapTraffic(t, file, in, out)
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}
	// udp.checksum.status 1 means tshark verified the checksum as good.
	cmd := exec.Command(tshark, "-n", "-r", path, "-T", "fields",
		"-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.checksum.status",
		"-o", "udp.check_checksum:TRUE")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	want := strings.Join([]string{
		"198.18.0.1\t\t5000\t53\t1",
		"\t2001:2::1\t5001\t53\t1",
		"198.19.0.2\t\t53\t5000\t1",
	}, "\n") + "\n"
	if string(got) != want {
		t.Fatalf("tshark fields:\n%q\nwant\n%q", got, want)
	}
}
