package tcp

import (
	"reflect"
	"slices"
	"testing"
)

// twDropped are the TCB fields a compact TIME-WAIT record leaves out, each
// with why nothing is lost: freezeTimeWait refuses to freeze unless they
// hold nothing, or thaw rebuilds them.
var twDropped = map[string]string{
	"state":       "always TIME-WAIT; thaw sets it",
	"sndBuf":      "empty when frozen; its size is carried (sndBufSize)",
	"rcvBuf":      "empty when frozen; its size is carried (rcvBufSize)",
	"scratch":     "nil when frozen",
	"sb":          "nil when frozen (no SACK scoreboard in use)",
	"ooo":         "nil when frozen (no out-of-order data)",
	"rcvTune":     "receive-buffer tuning; no data arrives after the peer's FIN",
	"finWait2Arm": "cleared by the Output that precedes any freeze",
	"timers":      "all zero when frozen but 2·MSL, carried as timeWaitAt",
	"rtt":         "rebuilt by thaw; TIME-WAIT sends only ACKs, nothing timed",
	"recovery":    "no data in flight",
	"tlp":         "no data in flight; the tlp flags are false when frozen",
	"ackNow":      "false when frozen",
	"ackPending":  "zero when frozen",
	"synDue":      "false when frozen",
	"rstDue":      "false when frozen",
	"rstSeq":      "meaningful only with rstDue",
	"rstAck":      "meaningful only with rstDue",
	"rstFlags":    "meaningful only with rstDue",
	"probeDue":    "false when frozen",
	"kaDue":       "false when frozen",
	"forceSmall":  "false when frozen",
	"rtxOne":      "false when frozen",
	"dsackDue":    "false when frozen",
	"dsackStart":  "meaningful only with dsackDue",
	"dsackEnd":    "meaningful only with dsackDue",
	"events":      "zero when frozen",
	"out":         "output scratch, rebuilt on use",
}

// TestTimeWaitRecord_EveryTCBFieldIsCarriedOrDeliberatelyDropped fails
// when a TCB field is added without deciding whether the compact record
// must carry it.
func TestTimeWaitRecord_EveryTCBFieldIsCarriedOrDeliberatelyDropped(t *testing.T) {
	tcb, rec := reflect.TypeFor[TCB](), reflect.TypeFor[twRecord]()
	var dropped []string
	for i := range tcb.NumField() {
		name := tcb.Field(i).Name
		_, carried := rec.FieldByName(name)
		_, why := twDropped[name]
		switch {
		case carried && why:
			t.Errorf("TCB.%s is carried by the record and listed as dropped", name)
		case !carried && !why:
			t.Errorf("TCB.%s is neither carried by twRecord nor listed in twDropped with a reason", name)
		case !carried:
			dropped = append(dropped, name)
		}
	}
	for name := range twDropped {
		if !slices.Contains(dropped, name) {
			if _, ok := tcb.FieldByName(name); !ok {
				t.Errorf("twDropped lists %s, which the TCB no longer has", name)
			}
		}
	}
	for i := range rec.NumField() {
		name := rec.Field(i).Name
		if _, ok := tcb.FieldByName(name); !ok && name != "sndBufSize" && name != "rcvBufSize" {
			t.Errorf("twRecord.%s has no TCB field", name)
		}
	}
}
