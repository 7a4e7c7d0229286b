package index_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

const td = "jisr.internal"

func TestIndexFollowsEveryLogAndProvesEveryRecord(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	keyDir := t.TempDir()
	logger := bustest.Logger(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	gw := env.Connect(t, "gateway")
	logs := map[string]*audit.Log{}
	for _, id := range []string{"gw-1", "gw-2"} {
		kp, _, err := checkpoint.EnsureKey(keyDir, id, checkpoint.Origin(td, id))
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: id, Key: kp}, audit.WithLogger(logger), audit.WithCheckpointEvery(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		logs[id] = l
	}
	appendSome := func(l *audit.Log, from, n int) {
		var wg sync.WaitGroup
		for i := from; i < from+n; i++ {
			wg.Go(func() {
				d := &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: env.Keyer.CKey(fmt.Sprintf("AB%d", i%5)), Code: codes.OK, Allowed: true}
				if err := l.Append(ctx, d); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	appendSome(logs["gw-1"], 0, 40)
	appendSome(logs["gw-2"], 0, 25)

	keys, err := checkpoint.LoadPublicKeys(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(gw)
	records, _ := js.Stream(ctx, subject.AuditStream)
	ckpts, _ := js.Stream(ctx, subject.CheckpointStream)
	dbPath := filepath.Join(t.TempDir(), "index.db")
	run := func(ctx context.Context) (*index.Index, func()) {
		store, err := index.OpenStore(dbPath)
		if err != nil {
			t.Fatal(err)
		}
		ix := index.New(store, records, ckpts, td, keys, logger)
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { ix.Run(rctx); close(done) }()
		return ix, func() { stop(); <-done; store.Close() }
	}
	ix, stop := run(ctx)
	// Records keep coming while the index follows.
	appendSome(logs["gw-1"], 40, 30)
	for id, want := range map[string]uint64{"gw-1": 70, "gw-2": 25} {
		if _, err := ix.WaitFor(ctx, id, want); err != nil {
			t.Fatal(err)
		}
	}
	prove := func(ix *index.Index) {
		t.Helper()
		err := stream.Scan(ctx, records, stream.ScanOptions{}, func(m stream.Msg) error {
			_, _, _, recs, err := record.Stored(m.Subject, m.Header, m.Data)
			if err != nil {
				return err
			}
			for _, data := range recs {
				rec, err := record.Parse(data)
				if err != nil {
					return err
				}
				p, err := ix.Proof(ctx, rec.GetLogId(), rec.GetLeafIndex(), tree.LeafHash(data))
				if err != nil {
					return err
				}
				// What a citizen does: open the checkpoint with the public key and
				// check the path from the record's bytes to its root.
				c, err := checkpoint.Open(p.GetCheckpoint(), keys.Verifiers())
				if err != nil {
					return err
				}
				if err := tree.VerifyInclusion(p.GetLeafIndex(), c.Size, tree.LeafHash(data), p.GetHashes(), c.Root); err != nil {
					return err
				}
				// The index knows where the citizen's record is.
				where, err := ix.Citizen(ctx, rec.GetCkey())
				if err != nil {
					return err
				}
				if !slices.Contains(where, index.Access{Log: rec.GetLogId(), Leaf: rec.GetLeafIndex(), Seq: m.Seq}) {
					return fmt.Errorf("the index does not list log %s leaf %d for its citizen: %v", rec.GetLogId(), rec.GetLeafIndex(), where)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	prove(ix)
	if _, err := ix.Proof(ctx, "gw-1", 999, tree.LeafHash([]byte("x"))); err == nil {
		t.Fatal("a proof for a leaf no checkpoint covers")
	}
	stop()

	// A restarted index resumes from its database and follows new records.
	appendSome(logs["gw-2"], 25, 10)
	ix, stop = run(ctx)
	defer stop()
	if _, err := ix.WaitFor(ctx, "gw-2", 35); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.WaitFor(ctx, "gw-1", 70); err != nil {
		t.Fatal(err)
	}
	prove(ix)
	for _, l := range logs {
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// The gateway's own records reach the index in process, as they are
// committed; the follower of the stream does not read them back (it still
// brings another log's). The in-process path is told here to file the
// records under a marked citizen key, which only it can produce.
func TestTheGatewaysOwnRecordsAreIndexedInProcess(t *testing.T) {
	t.Parallel()
	b := startAuditBus(t, 60*time.Second, "gw-1", "gw-2")
	ctx, env, logs := b.ctx, b.env, b.logs
	ix, store := b.newIndex(t, "")
	handOver(ix, logs["gw-1"], "INPROC-", nil)
	// The records are committed before the index follows the stream: a
	// follower that read gw-1's batches first would index them from the
	// stream (and drop the handovers), as it must when a handover is late.
	ck := env.Keyer.CKey("AB1")
	for _, id := range []string{"gw-1", "gw-2"} {
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if err := logs[id].Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: ck, Code: codes.OK, Allowed: true}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	stop := follow(ctx, ix)
	defer func() { stop(); store.Close() }()
	for _, id := range []string{"gw-1", "gw-2"} {
		if _, err := ix.WaitFor(ctx, id, 20); err != nil {
			t.Fatal(err)
		}
	}
	count := func(ckey string) map[string]int {
		where, err := ix.Citizen(ctx, ckey)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, w := range where {
			n[w.Log]++
		}
		return n
	}
	if got := count("INPROC-" + ck); got["gw-1"] != 20 || got["gw-2"] != 0 {
		t.Fatalf("records indexed in process: %v, want gw-1's 20", got)
	}
	if got := count(ck); got["gw-1"] != 0 || got["gw-2"] != 20 {
		t.Fatalf("records indexed from the stream: %v, want gw-2's 20 and none of gw-1 (read back)", got)
	}
}

// The records this gateway committed are listed in its citizens' access
// logs at once, before the index writes them to its store (it does so in
// large transactions); others' records waiting there are not, until they
// are found to chain.
func TestOwnCommittedRecordsAreListedBeforeTheyAreWritten(t *testing.T) {
	t.Parallel()
	store, err := index.OpenStore(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	keys, err := checkpoint.LoadPublicKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ix := index.New(store, nil, nil, td, keys, nil)
	ix.Own("gw-1", 5)
	h := func(s string) []byte { return tree.LeafHash([]byte(s)) }
	ix.AddCommitted("gw-1", 7, 5, []index.Leaf{{Hash: h("a"), CKey: "CKA"}, {Hash: h("b"), Prev: h("a"), CKey: "CKB"}, {Hash: h("c"), Prev: h("b"), CKey: "CKA"}})
	ix.AddCommitted("gw-2", 8, 0, []index.Leaf{{Hash: h("d"), CKey: "CKA"}}) // not this gateway's log
	got, err := ix.Citizen(t.Context(), "CKA")
	if err != nil {
		t.Fatal(err)
	}
	want := []index.Access{{Log: "gw-1", Leaf: 5, Seq: 7}, {Log: "gw-1", Leaf: 7, Seq: 7}}
	if !slices.Equal(got, want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	if got, _ := ix.Citizen(t.Context(), "CKC"); len(got) != 0 {
		t.Fatalf("another citizen's accesses listed: %v", got)
	}
}

// While other replicas' records are written every 200 ms, the gateway's
// own wait for their larger transaction — and the stream position the
// index keeps does not pass them meanwhile: an index stopped before it
// wrote them (a crash) reads them again from the stream when it starts.
func TestTheOwnRecordsNotYetWrittenAreReadAgainAfterARestart(t *testing.T) {
	t.Parallel()
	b := startAuditBus(t, 60*time.Second, "gw-1", "gw-2")
	ctx, env, logs := b.ctx, b.env, b.logs
	path := filepath.Join(t.TempDir(), "index.db")
	ix, store := b.newIndex(t, path)
	handOver(ix, logs["gw-1"], "", nil)
	stop := follow(ctx, ix)

	ck := env.Keyer.CKey("AB1")
	appendN := func(id string, n int) {
		for range n {
			if err := logs[id].Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: ck, Code: codes.OK, Allowed: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Once a first record is indexed, the first flush (a whole one, at
	// once) is behind: the own records now wait for the next whole one,
	// seconds away, while gw-2's are written.
	appendN("gw-2", 1)
	if _, err := ix.WaitFor(ctx, "gw-2", 1); err != nil {
		t.Fatal(err)
	}
	appendN("gw-1", 10)
	appendN("gw-2", 10)
	if _, err := ix.WaitFor(ctx, "gw-2", 11); err != nil {
		t.Fatal(err)
	}
	if where, err := ix.Citizen(ctx, ck); err != nil || len(where) != 21 {
		t.Fatalf("listed %d accesses (%v), want gw-1's 10 and gw-2's 11", len(where), err)
	}
	stop()
	logs["gw-1"].OnCommit(nil)
	store.Close()

	// Started again on the same store, without the in-process hand-over:
	// gw-1's records come from the stream.
	ix, store = b.newIndex(t, path)
	defer store.Close()
	defer follow(ctx, ix)()
	if err := logs["gw-1"].Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.WaitFor(ctx, "gw-1", 10); err != nil {
		t.Fatal(err)
	}
	if where, err := ix.Citizen(ctx, ck); err != nil || len(where) != 21 {
		t.Fatalf("after the restart, %d accesses indexed (%v), want 21", len(where), err)
	}
}

// The own leaves handed over in process wait in memory for the follower's
// flush; a follower that is not running (its store or stream failing)
// must not let them grow with every query. Past the bound the handover
// stops and the follower reads those records from the stream itself when
// it runs again: none is lost, every one listed to its citizen.
func TestTheOwnLeavesHeldInMemoryAreBounded(t *testing.T) {
	t.Parallel()
	b := startAuditBus(t, 60*time.Second, "gw-1")
	ctx, env, l := b.ctx, b.env, b.logs["gw-1"]
	ix, store := b.newIndex(t, "")
	const bound, n = 8, 30
	index.SetOwnPendingMax(ix, bound)
	handOver(ix, l, "", nil)
	ck := env.Keyer.CKey("AB1")
	for range n { // the follower not running
		if err := l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: ck, Code: codes.OK, Allowed: true}); err != nil {
			t.Fatal(err)
		}
	}
	if got := index.OwnPending(ix); got > bound {
		t.Fatalf("the index holds %d own leaves in memory, want at most %d", got, bound)
	}
	stop := follow(ctx, ix)
	defer func() { stop(); store.Close() }()
	if _, err := ix.WaitFor(ctx, "gw-1", n); err != nil {
		t.Fatal(err)
	}
	where, err := ix.Citizen(ctx, ck)
	if err != nil {
		t.Fatal(err)
	}
	if len(where) != n {
		t.Fatalf("%d records listed to the citizen, want %d", len(where), n)
	}
	for i, w := range where {
		if w.Log != "gw-1" || w.Leaf != uint64(i) {
			t.Fatalf("listed %v, want gw-1's leaves 0..%d once each", where, n-1)
		}
	}
}

// A batch of the gateway's own log can be stored without being handed over
// in process: its acknowledgement lost, the log re-reads its tail and
// adopts the stored records (audit.Log.readTail) without calling OnCommit's
// function. The follower must then read that batch from the stream rather
// than skip it: else the log's index stops at the gap, and every later
// record of this gateway is neither listed to its citizen nor proved.
func TestAnOwnBatchNotHandedOverIsReadFromTheStream(t *testing.T) {
	t.Parallel()
	const n = 12
	// The lost batch is followed by others, whose handover shows it will
	// never come; or it is the last, and the follower stops waiting for it
	// after deferMax.
	for _, c := range []struct {
		lost     int
		deferMax time.Duration
	}{{5, time.Hour}, {n, 300 * time.Millisecond}} {
		lost := c.lost
		t.Run(fmt.Sprintf("batch %d of %d", lost, n), func(t *testing.T) {
			t.Parallel()
			b := startAuditBus(t, 30*time.Second, "gw-1")
			ctx, env, l := b.ctx, b.env, b.logs["gw-1"]
			ix, store := b.newIndex(t, "")
			index.SetDeferMax(ix, c.deferMax) // an hour: only the later handovers can end the wait
			// This batch is stored, its acknowledgement lost: adopted,
			// never handed over.
			handOver(ix, l, "", func(batch int) bool { return batch == lost })
			stop := follow(ctx, ix)
			defer func() { stop(); store.Close() }()
			ck := env.Keyer.CKey("AB1")
			for range n {
				if err := l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: ck, Code: codes.OK, Allowed: true}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := ix.WaitFor(ctx, "gw-1", n); err != nil {
				t.Fatalf("gw-1's %d records not all indexed: %v", n, err)
			}
			where, err := ix.Citizen(ctx, ck)
			if err != nil {
				t.Fatal(err)
			}
			if len(where) != n {
				t.Fatalf("%d records listed to the citizen, want %d: %v", len(where), n, where)
			}
		})
	}
}

// The follower usually receives the gateway's own batch from the stream
// before the log's sequencer, which waits for JetStream's acknowledgement,
// hands it over. It must not parse the batch again then: it waits for the
// handover. Here every handover waits until the follower has reached its
// batch; the records must still all be indexed in process (their citizen
// keys marked, as only the handover files them), none read back.
func TestTheFollowerWaitsForTheHandoverOfAnOwnBatchItReachesFirst(t *testing.T) {
	t.Parallel()
	b := startAuditBus(t, 60*time.Second, "gw-1")
	ctx, env, l := b.ctx, b.env, b.logs["gw-1"]
	ix, store := b.newIndex(t, "")
	stop := follow(ctx, ix)
	defer func() { stop(); store.Close() }()
	reached := 0
	handOver(ix, l, "INPROC-", func(int) bool {
		// Polled: the follower's reaching this batch (the handovers before
		// it applied, so only this one can be waiting).
		deadline := time.Now().Add(10 * time.Second)
		for index.Deferred(ix) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if index.Deferred(ix) == 1 {
			reached++
		}
		return false
	})
	const n = 6
	ck := env.Keyer.CKey("AB1")
	for range n {
		if err := l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: ck, Code: codes.OK, Allowed: true}); err != nil {
			t.Fatal(err)
		}
	}
	if reached != n {
		t.Fatalf("the follower reached %d of the %d batches before their handover, want all", reached, n)
	}
	if _, err := ix.WaitFor(ctx, "gw-1", n); err != nil {
		t.Fatal(err)
	}
	in, err := ix.Citizen(ctx, "INPROC-"+ck)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ix.Citizen(ctx, ck)
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != n || len(back) != 0 {
		t.Fatalf("%d records indexed as handed over and %d read back from the stream, want %d and none", len(in), len(back), n)
	}
}

// The stream position the index keeps for its restart must not pass an own
// batch the follower waits for, however far other replicas' records take
// it: a crash then would lose that batch from the index for good.
func TestThePositionKeptStaysBeforeABatchWaitedFor(t *testing.T) {
	t.Parallel()
	b := startAuditBus(t, 60*time.Second, "gw-1", "gw-2")
	ctx, env, logs := b.ctx, b.env, b.logs
	ix, store := b.newIndex(t, "")
	index.SetDeferMax(ix, time.Hour)
	handOver(ix, logs["gw-1"], "", func(int) bool { return true }) // stored, never handed over
	stop := follow(ctx, ix)
	defer func() { stop(); store.Close() }()
	ck := env.Keyer.CKey("AB1")
	rec := func(id string) {
		if err := logs[id].Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: ck, Code: codes.OK, Allowed: true}); err != nil {
			t.Fatal(err)
		}
	}
	rec("gw-2") // the position can move past it
	rec("gw-1")
	info, err := b.records.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waited := info.State.LastSeq
	for index.Deferred(ix) == 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond) // polled: the follower's reaching gw-1's batch
	}
	for range 10 {
		rec("gw-2")
	}
	// Written and checkpointed; a flush writes the position after the
	// records, so one more record's flush shows that write done.
	if _, err := ix.WaitFor(ctx, "gw-2", 11); err != nil {
		t.Fatal(err)
	}
	rec("gw-2")
	if _, err := ix.WaitFor(ctx, "gw-2", 12); err != nil {
		t.Fatal(err)
	}
	if pos, err := store.Position(ctx); err != nil || pos >= waited {
		t.Fatalf("the kept position is %d (%v): past gw-1's batch at %d, which is not indexed", pos, err, waited)
	}
}
