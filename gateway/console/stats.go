package console

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// statsView is the statistics page.
type statsView struct {
	Since     time.Time
	Members   []countRow
	Rules     []countRow
	Reasons   []countRow
	Latency   template.HTML // p50/p99 over time, SVG
	Buckets   []latencyBucket
	BucketLen time.Duration
}

type countRow struct {
	Name             string
	Queries, Refused int
	Link             string
}

type latencyBucket struct {
	Start    time.Time
	N        int
	P50, P99 time.Duration
}

// Stats counts queries and refusals per member, rule and reason since
// since, and the latency percentiles in buckets of the period.
func (s *Server) Stats(ctx context.Context, since time.Time, buckets int) (*statsView, error) {
	v := &statsView{Since: since}
	db := s.cfg.Store.db
	group := func(col string, where string) ([]countRow, error) {
		rows, err := db.QueryContext(ctx, `SELECT `+col+`, COUNT(*), SUM(allowed = 0) FROM decisions WHERE time_ns >= ? `+where+` GROUP BY 1 ORDER BY 2 DESC LIMIT 100`, since.UnixNano())
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []countRow
		for rows.Next() {
			var c countRow
			if err := rows.Scan(&c.Name, &c.Queries, &c.Refused); err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, rows.Err()
	}
	var err error
	if v.Members, err = group("consumer", ""); err != nil {
		return nil, err
	}
	for i := range v.Members {
		v.Members[i].Link = link(Filter{Consumer: v.Members[i].Name, From: since})
	}
	if v.Rules, err = group("rule", "AND consumer != 'auditor'"); err != nil {
		return nil, err
	}
	if v.Reasons, err = group("reason", "AND allowed = 0"); err != nil {
		return nil, err
	}
	for i := range v.Reasons {
		v.Reasons[i].Link = link(Filter{Reason: v.Reasons[i].Name, Decision: "refused", From: since})
	}
	// Latency percentiles per bucket, over the queries the gateway forwarded.
	now := s.cfg.Now()
	v.BucketLen = max(now.Sub(since)/time.Duration(buckets), time.Second)
	lat := make([][]int64, buckets)
	rows, err := db.QueryContext(ctx, `SELECT time_ns, latency_us FROM decisions WHERE time_ns >= ? AND consumer != 'auditor' LIMIT 500000`, since.UnixNano())
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var t, l int64
		if err := rows.Scan(&t, &l); err != nil {
			rows.Close()
			return nil, err
		}
		i := int(time.Unix(0, t).Sub(since) / v.BucketLen)
		if i >= 0 && i < buckets {
			lat[i] = append(lat[i], l)
		}
	}
	rows.Close()
	for i, ls := range lat {
		b := latencyBucket{Start: since.Add(time.Duration(i) * v.BucketLen), N: len(ls)}
		if len(ls) > 0 {
			slices.Sort(ls)
			b.P50 = time.Duration(ls[(len(ls)-1)*50/100]) * time.Microsecond
			b.P99 = time.Duration(ls[(len(ls)-1)*99/100]) * time.Microsecond
		}
		v.Buckets = append(v.Buckets, b)
	}
	v.Latency = latencySVG(v.Buckets)
	return v, nil
}

// latencySVG draws p50 and p99 per bucket as two polylines.
func latencySVG(bs []latencyBucket) template.HTML {
	const w, h, pad = 900.0, 220.0, 40.0
	var top time.Duration
	for _, b := range bs {
		top = max(top, b.P99)
	}
	if top == 0 {
		top = time.Millisecond
	}
	var dots strings.Builder
	pts := func(p func(latencyBucket) time.Duration, color string) string {
		var sb strings.Builder
		for i, b := range bs {
			if b.N == 0 {
				continue
			}
			x := pad + (w-2*pad)*float64(i)/float64(max(len(bs)-1, 1))
			y := h - pad - (h-2*pad)*float64(p(b))/float64(top)
			fmt.Fprintf(&sb, "%.1f,%.1f ", x, y)
			fmt.Fprintf(&dots, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s: %s (%d)</title></circle>`, x, y, color, b.Start.UTC().Format("01-02 15:04"), p(b).Round(time.Microsecond), b.N)
		}
		return sb.String()
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="latency p50 p99">`, int(w), int(h))
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, int(pad), int(h-pad), int(w-pad), int(h-pad))
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999"/>`, int(pad), int(pad), int(pad), int(h-pad))
	fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="11" font-family="sans-serif" direction="ltr">%s</text>`, 2, int(pad)-6, top.Round(time.Microsecond))
	fmt.Fprintf(&sb, `<polyline class="p99" fill="none" stroke="#b3261e" stroke-width="2" points="%s"/>`, pts(func(b latencyBucket) time.Duration { return b.P99 }, "#b3261e"))
	fmt.Fprintf(&sb, `<polyline class="p50" fill="none" stroke="#2f6f9f" stroke-width="2" points="%s"/>`, pts(func(b latencyBucket) time.Duration { return b.P50 }, "#2f6f9f"))
	sb.WriteString(dots.String())
	fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="11" fill="#2f6f9f" font-family="sans-serif" direction="ltr">p50</text><text x="%d" y="%d" font-size="11" fill="#b3261e" font-family="sans-serif" direction="ltr">p99</text>`, int(w-pad-60), 14, int(w-pad-25), 14)
	if len(bs) > 0 {
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="10" font-family="sans-serif" direction="ltr">%s</text>`, int(pad), int(h-pad)+14, bs[0].Start.UTC().Format("01-02 15:04"))
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="10" font-family="sans-serif" text-anchor="end" direction="ltr">%s</text>`, int(w-pad), int(h-pad)+14, bs[len(bs)-1].Start.UTC().Format("01-02 15:04"))
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String()) //nolint:gosec // numbers and fixed text only
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	hours, _ := strconv.Atoi(r.URL.Query().Get("hours"))
	if hours <= 0 || hours > 24*90 {
		hours = 24
	}
	v, err := s.Stats(r.Context(), s.cfg.Now().Add(-time.Duration(hours)*time.Hour), 48)
	if err != nil {
		s.fail(w, http.StatusInternalServerError, err)
		return
	}
	if err := s.look(r, "stats", "", ""); err != nil {
		s.fail(w, http.StatusServiceUnavailable, err)
		return
	}
	s.render(w, r, &view{Page: "stats", Stats: v})
}
