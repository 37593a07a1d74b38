package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"
)

// WriteTable writes the report as a text table: a block per workload, a
// row per figure, a column per stack with the median and the spread over
// the rounds, and after each userspace stack its ratio to the kernel.
func WriteTable(w io.Writer, r *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway bench: %s; %s, %s measured per test; MTU %s; %s; Linux %s; %s\n",
		strings.Join(r.Settings.Stacks, " vs "), formatQuantity(r.Settings.Rounds), formatQuantity(r.Settings.Duration),
		formatQuantity(r.Settings.MTU), formatQuantity(r.Host.CPUs), r.Host.Kernel, r.Host.GoVersion)
	if r.Settings.Queues != "" {
		fmt.Fprintf(&b, "gateways run with tun.queues %s\n", r.Settings.Queues)
	}
	if r.Settings.API {
		b.WriteString("gateways run with the API on (api.listen on a unix socket; every connection's ladder recorded)\n")
	}
	if r.Settings.Offload != "" {
		fmt.Fprintf(&b, "gateways run with tun.offload %s\n", r.Settings.Offload)
	}
	if r.Settings.Faults != "" {
		fmt.Fprintf(&b, "faults injected between each gateway's TUN and its stack: %s (the kernel baseline runs without them)\n", r.Settings.Faults)
	}
	b.WriteString("each cell: median (min–max) over the rounds; ×kernel = median ÷ kernel's median\n\n")
	writeRows(&b, tableRows(r))
	if r.Interrupted {
		b.WriteString("\nINTERRUPTED: the figures cover the rounds that completed.\n")
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(&b, "\n%d FAILURES:\n", len(r.Failures))
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  round %d  %-6s  %-13s  %s\n", f.Round, f.Stack, f.Test, indentTail(f.Error, "      "))
		}
	}
	if na := naReasons(r); len(na) > 0 {
		b.WriteString("\nn/a: " + strings.Join(na, "; ") + "\n")
	}
	if hasBulk(r) {
		b.WriteString("gateway CPU: the gateway process's user+system time. machine CPU: busy time of all CPUs\n" +
			"(/proc/stat), clients, servers and kernel included, so comparable across stacks, kernel too.\n")
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("bench: table: %w", err)
	}
	return nil
}

// row is one line of the table; a heading has a single cell and spans
// every column.
type row struct {
	Cells   []string
	Heading bool
}

func tableRows(r *Report) []row {
	withRatio := hasStack(r, StackKernel)
	head := []string{"figure", "unit", "better"}
	for _, s := range r.Settings.Stacks {
		head = append(head, s)
		if withRatio && s != StackKernel {
			head = append(head, "×kernel")
		}
	}
	rows := []row{{Cells: head}}
	workload := ""
	for _, res := range r.Results {
		if res.Workload != workload {
			workload = res.Workload
			rows = append(rows, row{Cells: []string{workload}, Heading: true})
		}
		cells := []string{"  " + res.Title, res.Unit, res.Better}
		for _, v := range res.Stacks {
			cells = append(cells, cellText(v))
			if withRatio && v.Stack != StackKernel {
				cells = append(cells, ratioText(v.RatioToKernel))
			}
		}
		rows = append(rows, row{Cells: cells})
	}
	return rows
}

func hasBulk(r *Report) bool {
	for _, res := range r.Results {
		if res.Metric == mMachineCPU {
			return true
		}
	}
	return false
}

func hasStack(r *Report, stack string) bool {
	for _, s := range r.Settings.Stacks {
		if s == stack {
			return true
		}
	}
	return false
}

// cellText is "median (min–max)", the total of a count, or "n/a".
func cellText(v StackValue) string {
	switch {
	case v.NA != "":
		return "n/a"
	case v.Total != nil:
		return fmt.Sprintf("%.0f total", *v.Total) // a count
	case len(v.Rounds) == 1 || *v.Min == *v.Max:
		return formatNumber(*v.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", formatNumber(*v.Median), formatNumber(*v.Min), formatNumber(*v.Max))
}

func ratioText(r *float64) string {
	if r == nil {
		return "–"
	}
	return "×" + formatRatio(*r)
}

func formatRatio(r float64) string {
	if r >= 10 {
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.2f", r)
}

// formatNumber prints about three significant digits, never with an
// exponent.
func formatNumber(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	case a >= 0.01:
		return fmt.Sprintf("%.3f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

// writeRows pads the cells of every non-heading row into columns.
func writeRows(b *strings.Builder, rows []row) {
	var widths []int
	for _, r := range rows {
		if r.Heading {
			continue
		}
		for i, c := range r.Cells {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		if r.Heading {
			b.WriteString(r.Cells[0] + "\n")
			continue
		}
		var line strings.Builder
		for i, c := range r.Cells {
			line.WriteString(c)
			if i < len(r.Cells)-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// naReasons lists each distinct reason a figure is missing, with the
// stack it concerns.
func naReasons(r *Report) []string {
	seen := make(map[string]bool)
	var out []string
	for _, res := range r.Results {
		for _, v := range res.Stacks {
			if v.NA == "" {
				continue
			}
			s := v.Stack + ": " + v.NA
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

func indentTail(s, indent string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+indent)
}
