package bustest

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Logger returns a logger that writes each record, as text, to t.Log, so a
// component's logs appear beside the test that ran it, and only when it fails
// or runs with -v.
//
// t.Log panics once a test has ended, and a component's goroutines may log
// late: records that arrive after the logger's own cleanup has run are
// dropped. Cleanups run last-registered first, so a component created after
// the logger and stopped in t.Cleanup logs until it is stopped.
func Logger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	// A slog.TextHandler writes each record with one Write.
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}
