package notify_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/notify"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// committed is a commit of gw-1 of n allowed accesses (ckeys ck-0…),
// visible at visible.
func committed(t *testing.T, first, n int, now, visible time.Time) audit.Committed {
	t.Helper()
	c := audit.Committed{LogID: "gw-1", First: uint64(first)}
	for i := first; i < first+n; i++ {
		var prev []byte // leaf 0 has none
		if i > 0 {
			prev = make([]byte, 32)
		}
		r := &auditv1.Record{LogId: "gw-1", LeafIndex: uint64(i), PrevLeafHash: prev, Time: timestamppb.New(now),
			Consumer: "cnss", Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson",
			Ckey: fmt.Sprintf("ck-%d", i), Purpose: "amo-enrolment", LegalBasis: "consent",
			Decision: auditv1.Decision_DECISION_ALLOWED, VisibleAt: timestamppb.New(visible)}
		b, err := record.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		c.Leaves = append(c.Leaves, audit.CommittedLeaf{Record: b})
	}
	return c
}

// gated holds every notification until open is closed, and counts how many
// it holds at once.
type gated struct {
	open      chan struct{}
	now, most atomic.Int64
	got       collected
}

func (g *gated) Notify(ctx context.Context, n notify.Notification) error {
	if _, ok := ctx.Deadline(); !ok {
		return fmt.Errorf("no deadline")
	}
	if v := g.now.Add(1); v > g.most.Load() {
		g.most.Store(v) // one goroutine at a time reaches a new high only under the bound
	}
	<-g.open
	g.now.Add(-1)
	return g.got.Notify(ctx, n)
}

// A slow notifier is called by a bounded set of workers, each call with a
// deadline, never a goroutine per notification; stopping the follower sends
// what was queued first; an access the citizen may see only later is not
// notified before then.
func TestTheFollowerSendsThroughBoundedWorkers(t *testing.T) {
	g := &gated{open: make(chan struct{}), got: collected{ns: map[string][]notify.Notification{}}}
	now := time.Date(2026, 11, 27, 23, 0, 0, 0, time.UTC)
	f := &notify.Follower{LogID: "gw-1", Notifier: g, Log: slog.New(slog.DiscardHandler), Workers: 3,
		Now: func() time.Time { return now }}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	const n = 40
	f.Committed(committed(t, 0, n, now, now.Add(-time.Second)))
	f.Committed(committed(t, n, 1, now, now.Add(time.Hour))) // a mandate's delay: not yet
	bustest.Eventually(t, 20*time.Second, func() error {
		return bustest.Check(g.now.Load() == 3, "the workers all busy")
	})
	close(g.open)
	bustest.Eventually(t, 20*time.Second, func() error {
		return bustest.Check(len(g.got.of(fmt.Sprintf("ck-%d", n-1))) == 1, "the last access notified")
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if ns := g.got.of(fmt.Sprintf("ck-%d", i)); len(ns) != 1 || ns[0].Record != fmt.Sprintf("gw-1/%d", i) {
			t.Fatalf("access %d: %+v", i, ns)
		}
	}
	if ns := g.got.of(fmt.Sprintf("ck-%d", n)); len(ns) != 0 {
		t.Fatalf("notified before the citizen may see it: %+v", ns)
	}
	if m := g.most.Load(); m > 3 {
		t.Fatalf("%d notifications at once, want at most 3 workers", m)
	}
	if d := f.Dropped(); d != 0 {
		t.Fatalf("%d dropped", d)
	}
}

// The production notifier through the follower: each access is posted once,
// signed; a receiver's refusal loses nothing else.
func TestTheFollowerPostsToTheWebhook(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(notify.SignatureHeader) == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		got[r.URL.Path]++
		if got[r.URL.Path] == 3 {
			w.WriteHeader(http.StatusBadGateway) // one refused
		}
	}))
	defer srv.Close()
	now := time.Now()
	f := &notify.Follower{LogID: "gw-1", Notifier: notify.Webhook{URL: srv.URL + "/n", Secret: []byte("s")}, Log: slog.New(slog.DiscardHandler)}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Committed(committed(t, 0, 10, now, now.Add(-time.Second)))
	bustest.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		return bustest.Check(got["/n"] == 10, "every access posted")
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
