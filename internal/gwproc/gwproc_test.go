package gwproc

import (
	"slices"
	"strings"
	"testing"
)

func TestTailBuffer_KeepsTheLastBytes(t *testing.T) {
	b := NewTailBuffer(8)
	b.Write([]byte("hello, "))
	b.Write([]byte("world"))
	if got := b.String(); got != "o, world" {
		t.Fatalf("got %q", got)
	}
}

func TestEnv_DropsTungateVariables(t *testing.T) {
	got := Env([]string{"PATH=/bin", "TUNGATE_STACK_KIND=gvisor", "HOME=/root", "TUNGATE_TUN_MTU=9000"})
	if !slices.Equal(got, []string{"PATH=/bin", "HOME=/root"}) {
		t.Fatalf("got %v", got)
	}
	for _, kv := range Env(nil) {
		if strings.HasPrefix(kv, "TUNGATE_") {
			t.Fatalf("current environment keeps %s", kv)
		}
	}
}
