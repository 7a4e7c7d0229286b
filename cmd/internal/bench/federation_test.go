package bench

import (
	"testing"

	"github.com/jisr-bus/jisr/bus/federation"
)

// The bench's copy of the deployed federation loads, with its descriptor
// sets, and gives every member the most the federation allows: the bench
// measures the path, not the fair-share limiter. Everything else is kept.
func TestLiftFederation(t *testing.T) {
	const src = "../../../deploy/federation.yaml"
	orig, err := federation.Load(src)
	if err != nil {
		t.Fatal(err)
	}
	path, err := liftFederation(src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lifted, err := federation.Load(path)
	if err != nil {
		t.Fatalf("the lifted copy does not load: %v", err)
	}
	if len(lifted.Members) != len(orig.Members) || len(lifted.Rules) != len(orig.Rules) || len(lifted.Descriptors) != len(orig.Descriptors) || len(lifted.Descriptors) == 0 {
		t.Fatalf("members %d→%d, rules %d→%d, descriptor sets %d→%d", len(orig.Members), len(lifted.Members), len(orig.Rules), len(lifted.Rules), len(orig.Descriptors), len(lifted.Descriptors))
	}
	for i, m := range lifted.Members {
		l, was := m.Limits, orig.Members[i].Limits
		if l.QueriesPerSecond != 1e6 || l.Burst != 1e6 || l.InFlight != 1e5 || l.EventsPerSecond != 1e6 {
			t.Errorf("%s: limits %+v, want the most allowed", m.Name, l)
		}
		if l.MaxRequestBytes != was.MaxRequestBytes {
			t.Errorf("%s: max_request_bytes %d, was %d: not the bench's to change", m.Name, l.MaxRequestBytes, was.MaxRequestBytes)
		}
	}
}
