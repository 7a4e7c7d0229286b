package node

import (
	"testing"

	"github.com/jisr-bus/jisr/gateway/audit"
)

// The log's one commit hook reaches every subscriber, and none once removed.
func TestCommitHooksFanOut(t *testing.T) {
	var h commitHooks
	h.call(audit.Committed{}) // none yet
	var a, b int
	removeA := h.Add(func(audit.Committed) { a++ })
	removeB := h.Add(func(audit.Committed) { b++ })
	h.call(audit.Committed{})
	removeA()
	h.call(audit.Committed{})
	removeB()
	h.call(audit.Committed{})
	if a != 1 || b != 2 {
		t.Fatalf("a told %d times (want 1), b %d (want 2)", a, b)
	}
}
