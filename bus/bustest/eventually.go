package bustest

import (
	"errors"
	"testing"
	"time"
)

// Eventually calls cond until it returns nil, and fails the test with the
// last error cond returned if that has not happened within timeout. It polls
// with a short backoff (a few milliseconds, growing to 100ms), so a test waits
// on the condition it means and never on a guessed sleep.
//
// Eventually must be called from the test's goroutine. Keep timeouts generous:
// they bound a failing test, not a passing one.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 2 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("bustest: not after %s: %v", timeout, err)
		}
		time.Sleep(min(wait, time.Until(deadline)))
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Check turns a condition into an error for Eventually: nil when ok, else an
// error that says what was awaited.
func Check(ok bool, what string) error {
	if ok {
		return nil
	}
	return errors.New("waiting for " + what)
}
