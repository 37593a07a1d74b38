package proxy

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func setSocketOptions(fd int, o DirectOptions) error {
	if o.Fwmark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(o.Fwmark)); err != nil {
			return fmt.Errorf("proxy: direct: set SO_MARK %#x: %w", o.Fwmark, err)
		}
	}
	if o.BindInterface != "" {
		if err := unix.BindToDevice(fd, o.BindInterface); err != nil {
			return fmt.Errorf("proxy: direct: bind to interface %q: %w", o.BindInterface, err)
		}
	}
	return nil
}
