package tcp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADME_MapNamesEveryFile keeps README.md's map of this package true:
// every source file is named in the stack/tcp row.
func TestREADME_MapNamesEveryFile(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for line := range strings.Lines(string(readme)) {
		if strings.HasPrefix(line, "| `stack/tcp` |") {
			row = line
		}
	}
	if row == "" {
		t.Fatal("README.md has no stack/tcp row in its map")
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") && !strings.Contains(row, "`"+f+"`") {
			t.Errorf("README.md's map does not name stack/tcp/%s", f)
		}
	}
}
