//go:build !linux

package proxy

import (
	"errors"
	"fmt"
)

func setSocketOptions(fd int, o DirectOptions) error {
	return fmt.Errorf("proxy: direct: fwmark and bind_interface: %w", errors.ErrUnsupported)
}
