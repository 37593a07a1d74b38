package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseVmRSS_ReadsKilobytes(t *testing.T) {
	status := "Name:\tgateway\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil || got != 12345<<10 {
		t.Fatalf("got %d, %v", got, err)
	}
}

func TestParseVmRSS_MissingLineIsAnError(t *testing.T) {
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Fatal("no error")
	}
}

func TestParseProcStat_CountsFromTheLastParenthesis(t *testing.T) {
	// The command name may contain spaces and parentheses.
	stat := "4242 (odd) name (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 7 0 100 1000 300"
	got, err := parseProcStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 325 * time.Second / userHZ; got != want {
		t.Fatalf("cpu %v, want %v", got, want)
	}
}

func TestParseMachineBusy_LeavesOutIdleAndIOWait(t *testing.T) {
	stat := "cpu  100 10 50 9000 40 5 15 2 0 0\ncpu0 50 5 25 4500 20 2 7 1 0 0\nintr 1\n"
	got, err := parseMachineBusy([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 182 * time.Second / userHZ; got != want {
		t.Fatalf("busy %v, want %v", got, want)
	}
}

func TestProcessReaders_WorkOnThisProcess(t *testing.T) {
	rss, err := processRSS(os.Getpid())
	if err != nil || rss <= 0 {
		t.Fatalf("rss %d, %v", rss, err)
	}
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	busy, err := machineBusy()
	if err != nil || busy <= 0 {
		t.Fatalf("machine busy %v, %v", busy, err)
	}
}
