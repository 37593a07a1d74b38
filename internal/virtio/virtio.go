// Package virtio is the virtio-net header that the Linux TUN device puts
// before every packet once IFF_VNET_HDR is set: struct virtio_net_hdr of
// linux/virtio_net.h (../shared/rfc/virtio_net.h), ten bytes in the host's
// byte order (the TUN's legacy mode on a little-endian host; TUNSETVNETLE
// is not used).
//
// With TUNSETOFFLOAD (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6) the kernel hands
// the reader TCP superpackets of up to 64 KB, one IP and TCP header for
// many segments of GSOSize payload bytes each, whose transport checksum is
// only partial (FlagNeedsCsum: the pseudo-header sum at CsumStart +
// CsumOffset); a writer may hand the kernel the same. The helpers here
// describe and build such packets; they never allocate.
package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HdrLen is sizeof(struct virtio_net_hdr).
const HdrLen = 10

// Flags of the header.
const (
	// FlagNeedsCsum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the checksum at
	// CsumStart+CsumOffset holds only the pseudo-header sum; the rest is
	// to be summed from CsumStart to the end (CHECKSUM_PARTIAL).
	FlagNeedsCsum = 1
	// FlagDataValid (VIRTIO_NET_HDR_F_DATA_VALID): the checksum was
	// verified already (CHECKSUM_UNNECESSARY).
	FlagDataValid = 2
)

// GSO types of the header.
const (
	GSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE: one packet
	GSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP (UFO, obsolete)
	GSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4 (USO)
	GSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN: the superpacket carries CWR
)

// tcpCsumOffset is where the checksum lies in a TCP header.
const tcpCsumOffset = 16

// Hdr is a decoded virtio-net header.
type Hdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16 // IP + TCP header bytes of a superpacket (a hint: see TCPSuperpacket)
	GSOSize    uint16 // payload bytes of each segment but the last
	CsumStart  uint16 // where the partial checksum's range starts (the transport header)
	CsumOffset uint16 // the checksum field's offset from CsumStart
}

// Decode reads the header from the first HdrLen bytes of b, which must
// hold them.
func Decode(b []byte) Hdr {
	_ = b[HdrLen-1]
	return Hdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     binary.NativeEndian.Uint16(b[2:]),
		GSOSize:    binary.NativeEndian.Uint16(b[4:]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
}

// Encode writes h into the first HdrLen bytes of b, which must hold them.
func (h Hdr) Encode(b []byte) {
	_ = b[HdrLen-1]
	b[0], b[1] = h.Flags, h.GSOType
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}

// ChecksumTrusted reports whether the packet's transport checksum is not to
// be verified: the kernel left it partial because the packet never left
// this machine (FlagNeedsCsum), or verified it already (FlagDataValid).
func (h Hdr) ChecksumTrusted() bool { return h.Flags&(FlagNeedsCsum|FlagDataValid) != 0 }

// IsGSO reports whether the packet is a superpacket to be cut into
// segments of GSOSize.
func (h Hdr) IsGSO() bool { return h.GSOType&^GSOECN != GSONone }

// Errors of CheckInbound.
var (
	ErrGSOType = errors.New("virtio: unsupported GSO type")
	ErrHeader  = errors.New("virtio: header does not fit the packet")
)

// CheckInbound validates h for the IP packet pkt that followed it on a
// read: a superpacket must be TCP of the IP version its type names, with
// a segment size, its checksum partial over the transport header
// (CsumStart the IP header length, CsumOffset 16). ipHdrLen is the IP
// header length up to the TCP header, as parsed from pkt. Packets that
// are not superpackets pass unless their checksum start lies outside
// pkt. A superpacket with ECN (GSOECN) is refused: the gateway does not
// ask for TUN_F_TSO_ECN.
func (h Hdr) CheckInbound(pkt []byte, ipHdrLen int) error {
	if !h.IsGSO() {
		if h.Flags&FlagNeedsCsum != 0 && int(h.CsumStart)+int(h.CsumOffset)+2 > len(pkt) {
			return fmt.Errorf("%w: checksum at %d+%d in a %d-byte packet", ErrHeader, h.CsumStart, h.CsumOffset, len(pkt))
		}
		return nil
	}
	if len(pkt) == 0 {
		return fmt.Errorf("%w: empty superpacket", ErrHeader)
	}
	switch v := pkt[0] >> 4; {
	case h.GSOType == GSOTCPv4 && v == 4, h.GSOType == GSOTCPv6 && v == 6:
	default:
		return fmt.Errorf("%w: type %d for an IPv%d packet", ErrGSOType, h.GSOType, v)
	}
	if h.GSOSize == 0 {
		return fmt.Errorf("%w: superpacket without a segment size", ErrHeader)
	}
	if h.Flags&FlagNeedsCsum == 0 || int(h.CsumStart) != ipHdrLen || h.CsumOffset != tcpCsumOffset {
		return fmt.Errorf("%w: superpacket checksum flags %#x at %d+%d, IP header %d bytes", ErrHeader, h.Flags, h.CsumStart, h.CsumOffset, ipHdrLen)
	}
	return nil
}

// TCPSuperpacket is the header of a TCP packet written with a partial
// checksum: a superpacket of segments of gsoSize payload bytes when
// gsoSize > 0 (and the payload is longer than one segment), else a single
// segment. ipHdrLen and tcpHdrLen are the packet's header lengths.
func TCPSuperpacket(v6 bool, ipHdrLen, tcpHdrLen, gsoSize int) Hdr {
	h := Hdr{Flags: FlagNeedsCsum, CsumStart: uint16(ipHdrLen), CsumOffset: tcpCsumOffset}
	if gsoSize > 0 {
		h.GSOType = GSOTCPv4
		if v6 {
			h.GSOType = GSOTCPv6
		}
		h.HdrLen = uint16(ipHdrLen + tcpHdrLen)
		h.GSOSize = uint16(gsoSize)
	}
	return h
}
