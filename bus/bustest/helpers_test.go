package bustest_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventuallyWaitsForTheCondition(t *testing.T) {
	t.Parallel()
	calls := 0
	bustest.Eventually(t, 10*time.Second, func() error {
		if calls++; calls < 5 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 5 {
		t.Fatalf("cond called %d times, want 5", calls)
	}
}

func TestEventuallyFailsWithTheLastError(t *testing.T) {
	t.Parallel()
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	calls := 0
	go func() {
		defer close(done)
		bustest.Eventually(r, 50*time.Millisecond, func() error {
			calls++
			return fmt.Errorf("attempt %d", calls)
		})
	}()
	<-done
	if calls < 2 || !strings.Contains(r.msg, fmt.Sprintf("attempt %d", calls)) {
		t.Fatalf("after %d calls, Fatalf said %q; want the last error", calls, r.msg)
	}
}

// logRecorder is a testing.TB that keeps what is logged and the cleanups.
type logRecorder struct {
	testing.TB
	lines    []string
	cleanups []func()
}

func (r *logRecorder) Log(args ...any)  { r.lines = append(r.lines, fmt.Sprint(args...)) }
func (r *logRecorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

// t.Log panics once a test and its parents have ended: the logger stops
// writing when the test's cleanups run.
func TestLoggerWritesToTheTestUntilItsCleanup(t *testing.T) {
	t.Parallel()
	r := &logRecorder{TB: t}
	log := bustest.Logger(r)
	log.Info("during the test", "k", "v")
	for _, f := range r.cleanups {
		f()
	}
	log.Info("after the test")
	if len(r.lines) != 1 || !strings.Contains(r.lines[0], `msg="during the test" k=v`) {
		t.Fatalf("logged %q; want only the record made during the test", r.lines)
	}
}
