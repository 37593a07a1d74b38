package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Summary counts the outcomes of a run.
type Summary struct {
	Passed, Failed, Skipped int
}

// String is the runner's last line.
func (s Summary) String() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", s.Passed, s.Failed, s.Skipped)
}

// Collect returns the .pkt files named by paths: files as given,
// directories searched recursively, in lexical order.
func Collect(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("conformance: %w", err)
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.HasSuffix(path, ".pkt") {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("conformance: walking %s: %w", p, err)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	return files, nil
}

// RunFile parses and runs one script. A script that does not parse is
// skipped with the parse error as its reason: it uses syntax this runner
// does not support.
func RunFile(path string, opts Options) Result {
	text, err := os.ReadFile(path)
	if err != nil {
		return Result{Path: path, Status: Fail, Message: err.Error()}
	}
	s, err := Parse(path, string(text), ParseOptions{Defines: opts.Defines})
	if err != nil {
		return Result{Path: path, Status: Skip, Message: "unsupported syntax: " + err.Error()}
	}
	return RunScript(s, opts)
}

// RunAll runs every script under paths, writing one line per script (and
// the failure or skip reason) and the summary line to w.
func RunAll(w io.Writer, paths []string, opts Options) ([]Result, Summary, error) {
	files, err := Collect(paths)
	if err != nil {
		return nil, Summary{}, err
	}
	var results []Result
	var sum Summary
	for _, f := range files {
		res := RunFile(f, opts)
		results = append(results, res)
		switch res.Status {
		case Pass:
			sum.Passed++
			fmt.Fprintf(w, "PASS %s\n", res.Path)
		case Fail:
			sum.Failed++
			if res.Line > 0 {
				fmt.Fprintf(w, "FAIL %s:%d: %s\n     %s\n", res.Path, res.Line, res.Text, res.Message)
			} else {
				fmt.Fprintf(w, "FAIL %s: %s\n", res.Path, res.Message)
			}
		case Skip:
			sum.Skipped++
			fmt.Fprintf(w, "SKIP %s: %s\n", res.Path, res.Message)
		}
	}
	fmt.Fprintln(w, sum.String())
	return results, sum, nil
}

// WriteJSON writes results as a JSON array to path.
func WriteJSON(path string, results []Result) error {
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return fmt.Errorf("conformance: encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("conformance: writing %s: %w", path, err)
	}
	return nil
}
