package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the tick counts in /proc/PID/stat and /proc/stat.
// Linux exports them in USER_HZ, which is 100 on every architecture Go
// supports, whatever the kernel's internal HZ.
const userHZ = 100

func ticks(n uint64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// processRSS returns the resident set size of process pid in bytes.
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: rss: %w", err)
	}
	return parseVmRSS(b)
}

// parseVmRSS finds "VmRSS: N kB" in the text of /proc/PID/status.
func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("bench: rss: unexpected VmRSS line %q", bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: rss: %w", err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("bench: rss: no VmRSS line")
}

// processCPU returns the user+system CPU time process pid has used, all
// its threads together.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: cpu: %w", err)
	}
	return parseProcStat(b)
}

// parseProcStat reads utime and stime (fields 14 and 15) from the text of
// /proc/PID/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseProcStat(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: cpu: malformed stat %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: cpu: short stat %q", stat)
	}
	var sum uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: cpu: %w", err)
		}
		sum += n
	}
	return ticks(sum), nil
}

// machineBusy returns the busy time of all CPUs since boot, summed.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: machine cpu: %w", err)
	}
	return parseMachineBusy(b)
}

// parseMachineBusy reads the "cpu" line of /proc/stat: every column but
// idle (4th) and iowait (5th); guest time is already part of user time.
func parseMachineBusy(stat []byte) (time.Duration, error) {
	for line := range bytes.Lines(stat) {
		f := strings.Fields(string(line))
		if len(f) < 8 || f[0] != "cpu" {
			continue
		}
		var busy uint64
		for i, s := range f[1:min(len(f), 9)] { // user … steal
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: machine cpu: %w", err)
			}
			if i != 3 && i != 4 {
				busy += n
			}
		}
		return ticks(busy), nil
	}
	return 0, fmt.Errorf("bench: machine cpu: no cpu line in /proc/stat")
}

// kernelRelease is the running kernel's release, or "unknown".
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
