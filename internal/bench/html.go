package bench

import (
	"fmt"
	"html/template"
	"io"
	"strings"
)

// WriteHTML writes the report as one self-contained HTML page: the
// settings, the table, and for every workload one bar chart per figure
// with the stacks side by side (whiskers for the spread over the rounds)
// and each stack's ratio to the kernel. It uses inline SVG and CSS only.
func WriteHTML(w io.Writer, r *Report) error {
	page := htmlPage{Report: r, Table: tableRows(r)}
	page.Columns = len(page.Table[0].Cells)
	workload := ""
	for _, res := range r.Results {
		if res.Workload != workload {
			workload = res.Workload
			page.Workloads = append(page.Workloads, htmlWorkload{Title: workload})
		}
		wl := &page.Workloads[len(page.Workloads)-1]
		wl.Charts = append(wl.Charts, barChart(res))
	}
	page.NA = naReasons(r)
	if err := htmlTemplate.Execute(w, page); err != nil {
		return fmt.Errorf("bench: html: %w", err)
	}
	return nil
}

type htmlPage struct {
	Report    *Report
	Table     []row
	Columns   int // of the table
	Workloads []htmlWorkload
	NA        []string
}

type htmlWorkload struct {
	Title  string
	Charts []chart
}

// formatQuantity prints whole numbers without decimals.
func formatQuantity(q Quantity) string {
	if q.Value == float64(int64(q.Value)) {
		return fmt.Sprintf("%d %s", int64(q.Value), q.Unit)
	}
	return formatNumber(q.Value) + " " + q.Unit
}

// chart is the geometry of one horizontal bar chart, computed here so the
// template only places it.
type chart struct {
	Title, Unit, Better string
	Width, Height       int
	Bars                []bar
}

type bar struct {
	Stack, Color         string
	X, Y, TextY          int
	Width                float64 // of the bar, in pixels
	WhiskerX1, WhiskerX2 float64
	HasWhisker           bool
	Label, Ratio         string
	LabelX               float64
	NA                   string
}

// Chart layout, in pixels.
const (
	chartWidth  = 760
	labelWidth  = 80  // stack names
	plotWidth   = 460 // the longest bar
	rowHeight   = 30
	barHeight   = 20
	chartMargin = 8
)

func stackColor(stack string) string {
	switch stack {
	case StackKernel:
		return "#7f8c8d"
	case StackCustom:
		return "#2e86de"
	case StackGVisor:
		return "#e67e22"
	}
	return "#8e44ad"
}

func barChart(res Result) chart {
	c := chart{Title: res.Title, Unit: res.Unit, Better: res.Better, Width: chartWidth,
		Height: len(res.Stacks)*rowHeight + 2*chartMargin}
	scale := 0.0
	for _, v := range res.Stacks {
		if v.Max != nil {
			scale = max(scale, *v.Max)
		}
	}
	px := func(x float64) float64 {
		if scale <= 0 {
			return labelWidth // every value is zero
		}
		return float64(labelWidth) + x/scale*plotWidth
	}
	for i, v := range res.Stacks {
		b := bar{Stack: v.Stack, Color: stackColor(v.Stack), X: labelWidth, Y: chartMargin + i*rowHeight + (rowHeight-barHeight)/2}
		b.TextY = b.Y + barHeight/2 + 5
		if v.Median == nil {
			b.NA = "n/a"
			b.LabelX = labelWidth + 4
			c.Bars = append(c.Bars, b)
			continue
		}
		b.Width = px(*v.Median) - labelWidth
		b.WhiskerX1, b.WhiskerX2 = px(*v.Min), px(*v.Max)
		b.HasWhisker = *v.Min != *v.Max
		b.Label = cellText(v) + " " + res.Unit
		if v.RatioToKernel != nil && v.Stack != StackKernel {
			b.Ratio = "×" + formatRatio(*v.RatioToKernel) + " kernel"
		}
		b.LabelX = max(px(*v.Max), px(*v.Median)) + 6
		c.Bars = append(c.Bars, b)
	}
	return c
}

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"join":  strings.Join,
	"color": stackColor,
	"num":   formatQuantity,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>gateway bench: {{join .Report.Settings.Stacks " vs "}}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin: 1.6em 0 .4em; border-bottom: 1px solid #ddd; }
h3 { font-size: .95em; margin: .8em 0 .1em; font-weight: 600; }
.meta { color: #555; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
td, th { padding: 2px 8px; text-align: left; white-space: nowrap; }
th { border-bottom: 1px solid #999; }
tr.Heading td { font-weight: 600; padding-top: .7em; }
.fail { color: #b00020; }
.scroll { overflow-x: auto; }
svg text { font: 12px system-ui, sans-serif; fill: #222; }
svg text.ratio { fill: #555; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: -1px; }
</style>
</head>
<body>
<h1>gateway bench: {{join .Report.Settings.Stacks " vs "}}</h1>
<p class="meta">{{.Report.Started.Format "2006-01-02 15:04:05 MST"}} · took {{num .Report.Elapsed}} ·
{{num .Report.Settings.Rounds}} · {{num .Report.Settings.Duration}} measured per test after {{num .Report.Settings.Warmup}} warm-up ·
MTU {{num .Report.Settings.MTU}} · {{num .Report.Host.CPUs}} · Linux {{.Report.Host.Kernel}} · {{.Report.Host.GoVersion}}{{if .Report.Settings.Quick}} · quick mode{{end}}</p>
<p class="legend">{{range .Report.Settings.Stacks}}<span style="background:{{color .}}"></span>{{.}}{{end}}</p>
{{if .Report.Interrupted}}<p class="fail"><strong>Interrupted:</strong> the figures cover the rounds that completed.</p>{{end}}
{{if .Report.Failures}}<h2 class="fail">{{len .Report.Failures}} failures</h2>
<ul class="fail">{{range .Report.Failures}}<li>round {{.Round}}, {{.Stack}}, {{.Test}}: <pre>{{.Error}}</pre></li>{{end}}</ul>{{end}}

{{range .Workloads}}<h2>{{.Title}}</h2>
{{range .Charts}}<h3>{{.Title}} ({{.Unit}}, {{.Better}} is better)</h3>
<svg xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="{{.Title}}">
{{range .Bars}}<text x="0" y="{{.TextY}}">{{.Stack}}</text>
{{if .NA}}<text x="{{.LabelX}}" y="{{.TextY}}" class="ratio">n/a</text>
{{else}}<rect x="{{.X}}" y="{{.Y}}" width="{{printf "%.1f" .Width}}" height="20" fill="{{.Color}}" rx="2"></rect>
{{if .HasWhisker}}<line x1="{{printf "%.1f" .WhiskerX1}}" x2="{{printf "%.1f" .WhiskerX2}}" y1="{{.TextY}}" y2="{{.TextY}}" stroke="#222" stroke-width="1.5"></line>{{end}}
<text x="{{printf "%.1f" .LabelX}}" y="{{.TextY}}">{{.Label}}{{if .Ratio}} <tspan class="ratio">{{.Ratio}}</tspan>{{end}}</text>
{{end}}{{end}}</svg>
{{end}}{{end}}

<h2>All figures</h2>
<p class="meta">Each cell: median (min–max) over the rounds; ×kernel = median ÷ the kernel's median.</p>
<div class="scroll"><table>
{{range $i, $r := .Table}}{{if eq $i 0}}<tr>{{range $r.Cells}}<th>{{.}}</th>{{end}}</tr>
{{else if $r.Heading}}<tr class="heading"><td colspan="{{$.Columns}}">{{index $r.Cells 0}}</td></tr>
{{else}}<tr>{{range $r.Cells}}<td>{{.}}</td>{{end}}</tr>
{{end}}{{end}}</table></div>
{{if .NA}}<p class="meta">n/a: {{join .NA "; "}}</p>{{end}}

<h2>How these were measured</h2>
<ul class="meta">{{range .Report.Notes}}<li>{{.}}</li>{{end}}</ul>
</body>
</html>
`))
