package notify_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	"github.com/jisr-bus/jisr/gateway/notify"
)

// collected records what it is told.
type collected struct {
	mu sync.Mutex
	ns map[string][]notify.Notification // by ckey
}

func (c *collected) Notify(_ context.Context, n notify.Notification) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ns[n.CKey] = append(c.ns[n.CKey], n)
	return nil
}

func (c *collected) of(ckey string) []notify.Notification {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]notify.Notification(nil), c.ns[ckey]...)
}

// A real log stores its records in batches: every allowed access of this
// replica's log in a batch is notified once, a refused one and another
// replica's log are not.
func TestTheFollowerNotifiesEachAccessOfABatch(t *testing.T) {
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	gw := env.Connect(t, "gateway")
	keyDir := t.TempDir()
	logs := map[string]*audit.Log{}
	for _, id := range []string{"gw-1", "gw-2"} {
		kp, _, err := checkpoint.EnsureKey(keyDir, id, checkpoint.Origin("jisr.internal", id))
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: "jisr.internal", LogID: id, Key: kp}, audit.WithLogger(env.Log), audit.WithCheckpointEvery(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		logs[id] = l
	}
	js, _ := jetstream.New(env.Connect(t, "gateway"))
	records, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	got := &collected{ns: map[string][]notify.Notification{}}
	f := &notify.Follower{Records: records, LogID: "gw-1", Notifier: got, Log: env.Log}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	defer func() { stop(); <-done }()

	access := func(l *audit.Log, eid string, allowed bool) error {
		return l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", Provider: "civil-registry",
			Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson", CKey: env.Keyer.CKey(eid),
			Purpose: "amo-enrolment", LegalBasis: "consent", Allowed: allowed, Code: codes.OK})
	}
	// The follower reads what is stored after it starts: wait for it.
	bustest.Eventually(t, 20*time.Second, func() error {
		if err := access(logs["gw-1"], "WARMUP01", true); err != nil {
			return err
		}
		return bustest.Check(len(got.of(env.Keyer.CKey("WARMUP01"))) > 0, "the follower notifies")
	})
	before, _ := records.Info(ctx)

	const n = 120
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Citizen i: one allowed access in gw-1, one refused in gw-1,
			// one allowed in gw-2 (another replica's to notify).
			for _, a := range []struct {
				l       *audit.Log
				allowed bool
			}{{logs["gw-1"], true}, {logs["gw-1"], false}, {logs["gw-2"], true}} {
				if err := access(a.l, fmt.Sprintf("EE%06d", i), a.allowed); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	after, _ := records.Info(ctx)
	if msgs := after.State.Msgs - before.State.Msgs; msgs >= 3*n {
		t.Fatalf("%d messages for %d records: the log did not batch", msgs, 3*n)
	}
	// The last access, stored after all the others, notified: so were they.
	if err := access(logs["gw-1"], "LAST0001", true); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 20*time.Second, func() error {
		missing := 0
		for i := range n {
			if len(got.of(env.Keyer.CKey(fmt.Sprintf("EE%06d", i)))) == 0 {
				missing++
			}
		}
		return bustest.Check(missing == 0 && len(got.of(env.Keyer.CKey("LAST0001"))) == 1, "every access notified")
	})
	leaves := map[string]bool{}
	for i := range n {
		ns := got.of(env.Keyer.CKey(fmt.Sprintf("EE%06d", i)))
		if len(ns) != 1 || ns[0].Record[:5] != "gw-1/" || leaves[ns[0].Record] {
			t.Fatalf("citizen %d: %+v", i, ns)
		}
		leaves[ns[0].Record] = true
	}
}

// In the gateway that writes the log, the follower is handed the log's
// commits in process: every allowed access of a batch is notified once,
// another log's commits are not, and nothing is read back from the stream
// (it has no consumer).
func TestTheFollowerNotifiesTheCommitsHandedOver(t *testing.T) {
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	gw := env.Connect(t, "gateway")
	keyDir := t.TempDir()
	got := &collected{ns: map[string][]notify.Notification{}}
	f := &notify.Follower{LogID: "gw-1", Notifier: got, Log: env.Log}
	logs := map[string]*audit.Log{}
	for _, id := range []string{"gw-1", "gw-2"} {
		kp, _, err := checkpoint.EnsureKey(keyDir, id, checkpoint.Origin("jisr.internal", id))
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: "jisr.internal", LogID: id, Key: kp}, audit.WithLogger(env.Log), audit.WithCheckpointEvery(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		// gw-2's commits too: the follower notifies its own log's only.
		l.OnCommit(f.Committed)
		logs[id] = l
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	defer func() { stop(); <-done }()
	js, _ := jetstream.New(env.Connect(t, "gateway"))
	records, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := records.Info(ctx)

	const n = 120
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for _, a := range []struct {
				l       *audit.Log
				allowed bool
			}{{logs["gw-1"], true}, {logs["gw-1"], false}, {logs["gw-2"], true}} {
				err := a.l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", Provider: "civil-registry",
					Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson", CKey: env.Keyer.CKey(fmt.Sprintf("EE%06d", i)),
					Purpose: "amo-enrolment", LegalBasis: "consent", Allowed: a.allowed, Code: codes.OK})
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	after, _ := records.Info(ctx)
	if msgs := after.State.Msgs - before.State.Msgs; msgs >= 3*n {
		t.Fatalf("%d messages for %d records: the log did not batch", msgs, 3*n)
	}
	bustest.Eventually(t, 20*time.Second, func() error {
		missing := 0
		for i := range n {
			if len(got.of(env.Keyer.CKey(fmt.Sprintf("EE%06d", i)))) == 0 {
				missing++
			}
		}
		return bustest.Check(missing == 0, "every access notified")
	})
	leaves := map[string]bool{}
	for i := range n {
		ns := got.of(env.Keyer.CKey(fmt.Sprintf("EE%06d", i)))
		if len(ns) != 1 || ns[0].Record[:5] != "gw-1/" || leaves[ns[0].Record] {
			t.Fatalf("citizen %d: %+v", i, ns)
		}
		leaves[ns[0].Record] = true
	}
	if info, err := records.Info(ctx); err != nil || info.State.Consumers != 0 {
		t.Fatalf("%d consumers of the audit stream (%v): the records were read back", info.State.Consumers, err)
	}
	if d := f.Dropped(); d != 0 {
		t.Fatalf("%d records dropped", d)
	}
}

// A full queue drops the commit and says so (Dropped, and a log line),
// never blocking the log's sequencer.
func TestAFullQueueDropsLoudly(t *testing.T) {
	f := &notify.Follower{LogID: "gw-1", Notifier: &collected{ns: map[string][]notify.Notification{}}, Log: slog.New(slog.DiscardHandler), Queue: 1}
	c := audit.Committed{LogID: "gw-1", Leaves: make([]audit.CommittedLeaf, 3)}
	f.Committed(c) // queued: no Run reads it
	f.Committed(c)
	f.Committed(c)
	if d := f.Dropped(); d != 6 {
		t.Fatalf("%d records dropped, want 6", d)
	}
}
