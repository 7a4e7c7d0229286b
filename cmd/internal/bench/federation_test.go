package bench

import (
	"strings"
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

// The ≥ 5× target against a smaller machine's report: met, missed, and
// failed — never dropped — when the two runs cannot be compared.
func TestCompareTarget(t *testing.T) {
	full := func(qps float64) []Result { return []Result{{Scenario: "full", Concurrency: 512, QPS: qps}} }
	find := func(ts []Target) *Target {
		for i := range ts {
			if strings.Contains(ts[i].Target, "5×") {
				return &ts[i]
			}
		}
		return nil
	}
	for _, c := range []struct {
		name        string
		mine, ref   []Result
		cores, refC int
		met         bool
		measured    string
	}{
		{"met", full(25000), full(3300), 16, 2, true, "7.6×"},
		{"missed", full(10000), full(3300), 16, 2, false, "3.0×"},
		{"no figure at the load", full(25000), []Result{{Scenario: "full", Concurrency: 128, QPS: 3000}}, 16, 2, false, "not comparable"},
		{"not a smaller machine", full(25000), full(3300), 2, 2, false, "not comparable"},
	} {
		b := &harness{results: c.mine, facts: Facts{Cores: c.cores},
			o: options{concurrency: []int{1, 512}, compare: &Report{Facts: Facts{Cores: c.refC}, Results: c.ref}, comparePath: "ref.json"}}
		got := find(b.targets())
		if got == nil {
			t.Fatalf("%s: no ≥ 5× target", c.name)
		}
		if got.Met != c.met || !strings.Contains(got.Measured, c.measured) {
			t.Errorf("%s: %+v, want met=%v and %q", c.name, *got, c.met, c.measured)
		}
	}
}
