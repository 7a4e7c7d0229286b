package console_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/gateway/console"
)

// fill stores n synthetic decisions: 4 consumers, 20000 citizens, one in
// 25 refused, stored as the gateway stores them, in batches (of 8 here).
func fill(tb testing.TB, s *console.Store, n int) {
	tb.Helper()
	consumers := []string{"cnss", "tax", "health", "civil-registry"}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	batch := make([]console.Row, 0, 5000)
	data := make([]byte, 200)
	for i := 1; i <= n; i++ {
		r := console.Row{
			ID: idOf(i), Seq: uint64(i-1)/8 + 1, Log: "gw-1", Leaf: uint64(i - 1), Time: t0.Add(time.Duration(i) * 50 * time.Millisecond),
			Consumer: consumers[i%4], Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson",
			CKey: fmt.Sprintf("CKEY%08d", i%20000), Purpose: "amo-enrolment", LegalBasis: "consent", Rule: "r", Allowed: i%25 != 0,
			Reason: "ALLOWED", Latency: time.Duration(i%900) * time.Microsecond, TraceID: fmt.Sprintf("%032x", i), Subject: "jisr.audit.gw-1._batch", Data: data,
		}
		if !r.Allowed {
			r.Reason = "NO_ACCESS_RULE"
		}
		batch = append(batch, r)
		if len(batch) == cap(batch) || i == n {
			if err := s.Add(context.Background(), batch); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// idOf is the ID of fill's decision i (1 first).
func idOf(i int) uint64 { return console.ID(uint64(i-1)/8+1, (i-1)%8) }

func TestPagesAreKeysetPagesOfTheFilter(t *testing.T) {
	s, err := console.OpenStore(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fill(t, s, 2000)
	seen := map[uint64]bool{}
	var before console.Cursor
	for {
		rows, err := s.Page(t.Context(), console.Filter{Consumer: "tax", Decision: "allowed"}, before, 50)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Consumer != "tax" || !r.Allowed || seen[r.ID] || (before.ID != 0 && r.ID >= before.ID) {
				t.Fatalf("row %+v on the page before %v", r, before)
			}
			seen[r.ID] = true
		}
		if len(rows) < 50 {
			break
		}
		before = console.Next(rows)
	}
	// 500 of tax's, less the refused ones (every 25th i; tax is i%4==1, so i%100==25, 75: 20).
	if len(seen) != 480 {
		t.Fatalf("%d rows paged, want 480", len(seen))
	}
}

// BenchmarkPage1M pages through an index of one million decisions: the
// newest page, a page deep in the log, and a citizen's page. Run:
//
//	go test ./gateway/console -run '^$' -bench Page1M -benchtime 200x
func BenchmarkPage1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "console.db")
	s, err := console.OpenStore(path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	fill(b, s, 1_000_000)
	b.Logf("stored 1,000,000 decisions in %s", time.Since(start).Round(time.Millisecond))
	for _, bc := range []struct {
		name   string
		f      console.Filter
		before console.Cursor
	}{
		{"newest", console.Filter{}, console.Cursor{}},
		{"deep", console.Filter{}, console.Cursor{Time: time.Date(2026, 11, 1, 4, 10, 0, 0, time.UTC), ID: idOf(300_000)}},
		{"consumer+refused", console.Filter{Consumer: "tax", Decision: "refused"}, console.Cursor{}},
		{"citizen", console.Filter{CKey: "CKEY00012345"}, console.Cursor{}},
		{"time range", console.Filter{From: time.Date(2026, 11, 1, 6, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 1, 7, 0, 0, 0, time.UTC)}, console.Cursor{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				rows, err := s.Page(context.Background(), bc.f, bc.before, 50)
				if err != nil || len(rows) == 0 {
					b.Fatal(err, len(rows))
				}
			}
		})
	}
}
