package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/gateway/decision"
)

// TestObserveCountsEachLabelSetInItsSeries holds observe's cache of
// children to the vectors: every decision lands in the series of its own
// labels, for label sets first seen, seen again, and past the cache's
// bound.
func TestObserveCountsEachLabelSetInItsSeries(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := func(consumer string, allowed bool, code codes.Code, reason string) *decision.Decision {
		return &decision.Decision{Consumer: consumer, Provider: "civil-registry", Method: "GetPerson", LegalBasis: "consent",
			Allowed: allowed, Code: code, Reason: reason, Latency: time.Millisecond}
	}
	sets := maxChildren + 10
	for round := range 3 {
		for i := range sets {
			m.observe(d(fmt.Sprint("m", i), true, codes.OK, decision.ReasonAllowed))
		}
		m.observe(d("cnss", false, codes.PermissionDenied, "NO_RULE"))
		m.observe(d("cnss", false, codes.Unavailable, decision.ReasonProviderUnavailable))
		for _, i := range []int{0, maxChildren - 1, maxChildren, sets - 1} {
			if got := testutil.ToFloat64(m.queries.WithLabelValues(fmt.Sprint("m", i), "civil-registry", "GetPerson", "consent", "allowed", "OK")); got != float64(round+1) {
				t.Fatalf("round %d, label set %d: %v queries counted, want %d", round, i, got, round+1)
			}
		}
		if got := testutil.ToFloat64(m.queries.WithLabelValues("cnss", "civil-registry", "GetPerson", "consent", "refused", "PermissionDenied")); got != float64(round+1) {
			t.Fatalf("round %d: %v refusals counted, want %d", round, got, round+1)
		}
		if got := testutil.ToFloat64(m.queries.WithLabelValues("cnss", "civil-registry", "GetPerson", "consent", "provider_failed", "Unavailable")); got != float64(round+1) {
			t.Fatalf("round %d: %v provider failures counted, want %d", round, got, round+1)
		}
	}
	if n := testutil.CollectAndCount(m.latency); n != 3 {
		t.Errorf("%d latency series, want 3 (allowed, refused, provider_failed)", n)
	}
	if got := testutil.CollectAndCount(m.queries); got != sets+2 {
		t.Errorf("%d query series, want %d", got, sets+2)
	}
	if c := m.children.Load(); c == nil || len(*c) != maxChildren {
		n := 0
		if c != nil {
			n = len(*c)
		}
		t.Errorf("cache holds %d label sets, want %d (its bound)", n, maxChildren)
	}
}

// BenchmarkObserve is the metrics of one decided query.
func BenchmarkObserve(b *testing.B) {
	m, err := newMetrics(nil)
	if err != nil {
		b.Fatal(err)
	}
	d := &decision.Decision{Consumer: "cnss", Provider: "civil-registry", Method: "GetPerson", LegalBasis: "consent",
		Allowed: true, Code: codes.OK, Reason: decision.ReasonAllowed, Latency: time.Millisecond}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.observe(d)
		}
	})
}
