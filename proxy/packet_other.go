//go:build !linux

package proxy

import "syscall"

// setRecvErr does nothing: ICMP errors of unconnected sockets are not
// reported here.
func setRecvErr(syscall.RawConn) error { return nil }

func (u *directPacket) drainErrors() {}
