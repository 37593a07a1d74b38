package tcp

import (
	"testing"

	"github.com/tungate/tungate/stack"
	"github.com/tungate/tungate/stack/stacktest"
)

func TestContract(t *testing.T) {
	stacktest.Run(t, func(w stack.PacketWriter, h stack.Handler) (stack.Stack, error) {
		return New(w, h, DefaultOptions())
	})
}
