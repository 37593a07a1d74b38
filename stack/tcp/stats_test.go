package tcp

import (
	"reflect"
	"testing"
)

// TestStats_CarryEveryCounter: each connection counter reaches Stats
// under its own name, and Stats reports the value counted.
func TestStats_CarryEveryCounter(t *testing.T) {
	h := newPktHarness(t, nil)
	c := reflect.ValueOf(&h.e.counters).Elem()
	for i := range c.NumField() {
		c.Field(i).Addr().MethodByName("Add").Call([]reflect.Value{reflect.ValueOf(uint64(i + 1000))})
	}
	s := reflect.ValueOf(h.e.Stats())
	for i := range c.NumField() {
		name := c.Type().Field(i).Name
		f := s.FieldByName(name)
		if !f.IsValid() {
			t.Errorf("Counters.%s does not reach Stats", name)
			continue
		}
		if name == "RSTsSent" {
			continue // adds the engine's RSTs for no flow
		}
		if got := f.Uint(); got != uint64(i+1000) {
			t.Errorf("Stats.%s = %d, want %d", name, got, i+1000)
		}
	}
}
