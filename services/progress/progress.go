// Package progress draws a progress bar for long work (seeding a million
// citizens) on a terminal, and falls back to a few plain lines elsewhere
// (CI logs, files), so neither a person nor a log drowns in redraws.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Bar is a progress bar. The zero value is not usable; call New.
type Bar struct {
	mu      sync.Mutex
	w       io.Writer
	label   string
	tty     bool
	start   time.Time
	last    time.Time
	lastPct int
	drawn   bool
}

// New returns a bar writing to w.
func New(w io.Writer, label string) *Bar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &Bar{w: w, label: label, tty: tty, start: time.Now(), lastPct: -1}
}

// Update reports done of total; redraws at most ten times a second on a
// terminal, and every 25 % otherwise.
func (b *Bar) Update(done, total int) {
	if total <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	pct := done * 100 / total
	if b.tty {
		if now.Sub(b.last) < 100*time.Millisecond && done < total {
			return
		}
		const width = 30
		fill := width * done / total
		rate := float64(done) / max(now.Sub(b.start).Seconds(), 1e-3)
		eta := "—"
		if rate > 0 && done < total {
			eta = (time.Duration(float64(total-done)/rate) * time.Second).Round(time.Second).String()
		}
		fmt.Fprintf(b.w, "\r%s [%s%s] %3d%% %d/%d  %.0f/s  eta %s   ", b.label,
			strings.Repeat("█", fill), strings.Repeat("░", width-fill), pct, done, total, rate, eta)
		b.drawn = true
	} else if pct/25 != b.lastPct/25 || done == total && b.lastPct != 100 {
		if done == 0 && total < 100000 {
			return // small jobs finish before anyone reads a log line
		}
		fmt.Fprintf(b.w, "%s: %d%% (%d/%d)\n", b.label, pct, done, total)
	}
	b.last, b.lastPct = now, pct
}

// Done ends the bar's line on a terminal.
func (b *Bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.drawn {
		fmt.Fprintf(b.w, " done in %s\n", time.Since(b.start).Round(time.Millisecond))
		b.drawn = false
	}
}
