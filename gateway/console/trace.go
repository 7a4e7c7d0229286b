package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

func recordOf(data []byte) (*auditv1.Record, error) { return record.Parse(data) }

// traceView is a trace drawn as a waterfall.
type traceView struct {
	ID    string
	Spans []spanRow
	SVG   template.HTML
	Total time.Duration
	// Source: where the spans were read (the tracing backend or this
	// gateway's memory), and why not from the backend when it failed.
	Source traceSource
}

type spanRow struct {
	telemetry.Span
	Depth    int
	Duration time.Duration
}

// waterfall orders the spans parent before child (by start among
// siblings) and draws them on one time axis, server-side, as SVG.
func waterfall(id string, spans []telemetry.Span) *traceView {
	v := &traceView{ID: id}
	if len(spans) == 0 {
		return v
	}
	byID := map[string]bool{}
	children := map[string][]telemetry.Span{}
	for _, s := range spans {
		byID[s.SpanID] = true
	}
	var roots []telemetry.Span
	for _, s := range spans { // spans arrive sorted by start
		parent := s.ParentID
		if parent == "" {
			// A root that links a kept span (the gateway's query span links
			// the caller's "send jisr.q") is drawn under it.
			for _, l := range s.Links {
				if byID[l.SpanID] {
					parent = l.SpanID
					break
				}
			}
		}
		if parent == "" || !byID[parent] {
			roots = append(roots, s)
		} else {
			children[parent] = append(children[parent], s)
		}
	}
	var walk func(s telemetry.Span, depth int)
	walk = func(s telemetry.Span, depth int) {
		v.Spans = append(v.Spans, spanRow{Span: s, Depth: depth, Duration: s.End.Sub(s.Start)})
		for _, c := range children[s.SpanID] {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	start, end := spans[0].Start, spans[0].End
	for _, s := range spans {
		if s.Start.Before(start) {
			start = s.Start
		}
		if s.End.After(end) {
			end = s.End
		}
	}
	v.Total = end.Sub(start)
	total := float64(max(v.Total, time.Microsecond))
	const width, label, rowH = 1000.0, 330.0, 22
	var b strings.Builder
	h := len(v.Spans)*rowH + 24
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="trace %s">`, int(width), h, template.HTMLEscapeString(id))
	for i, s := range v.Spans {
		y := i*rowH + 4
		x := label + (width-label-10)*float64(s.Start.Sub(start))/total
		w := max((width-label-10)*float64(s.Duration)/total, 1.5)
		fill := "#2f6f9f"
		if s.Status == "Error" {
			fill = "#b3261e"
		}
		name := s.Name
		if s.Service != "" {
			name = s.Service + " · " + s.Name
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" font-family="sans-serif" direction="ltr">%s</text>`, 4+s.Depth*12, y+14, template.HTMLEscapeString(name))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="16" fill="%s"><title>%s %s</title></rect>`, x, y, w, fill, template.HTMLEscapeString(s.Name), s.Duration)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" font-family="sans-serif" fill="#333" direction="ltr">%s</text>`, min(x+w+3, width-60), y+13, s.Duration.Round(time.Microsecond))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" font-family="sans-serif" direction="ltr">0</text><text x="%d" y="%d" font-size="10" font-family="sans-serif" text-anchor="end" direction="ltr">%s</text>`,
		int(label), h-4, int(width)-4, h-4, v.Total.Round(time.Microsecond))
	b.WriteString(`</svg>`)
	v.SVG = template.HTML(b.String()) //nolint:gosec // every value is escaped above
	return v
}
