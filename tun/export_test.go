package tun

import "time"

// SetPcapClock replaces the tap's clock so tests can check timestamps.
func SetPcapClock(p *PcapDevice, now func() time.Time) { p.now = now }
