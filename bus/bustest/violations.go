package bustest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Violations collects the asynchronous permission errors the server sends a
// connection: install Handler with nats.ErrorHandler, then Wait for the
// refusal of a subject.
type Violations struct {
	mu   sync.Mutex
	errs []error
	ch   chan struct{}
}

// NewViolations returns an empty collector.
func NewViolations() *Violations { return &Violations{ch: make(chan struct{}, 1)} }

// Handler is a nats.ErrHandler that records err.
func (v *Violations) Handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
	select {
	case v.ch <- struct{}{}:
	default:
	}
}

// Wait fails the test unless the server reports, within 10 seconds, a
// permissions violation naming exactly subj (the server quotes it).
func (v *Violations) Wait(t testing.TB, subj string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		v.mu.Lock()
		for _, err := range v.errs {
			if isViolation(err) && strings.Contains(err.Error(), `"`+subj+`"`) {
				v.mu.Unlock()
				return
			}
		}
		seen := append([]error(nil), v.errs...)
		v.mu.Unlock()
		select {
		case <-v.ch:
		case <-deadline:
			t.Fatalf("bustest: no permission violation for %q; errors seen: %v", subj, seen)
		}
	}
}

func isViolation(err error) bool {
	return errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation")
}

// Errors returns every error the connection has been sent so far.
func (v *Violations) Errors() []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]error(nil), v.errs...)
}
