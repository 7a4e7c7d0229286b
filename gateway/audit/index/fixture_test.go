package index_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// auditBus is a bus with the audit streams, an audit log per id on the
// gateway's connection (closed with the test), and what an index of them
// needs: the two streams and the logs' checkpoint keys.
type auditBus struct {
	ctx            context.Context
	env            *bustest.Env
	logs           map[string]*audit.Log
	records, ckpts jetstream.Stream
	keys           *checkpoint.Keys
	logger         *slog.Logger
}

func startAuditBus(t *testing.T, timeout time.Duration, ids ...string) *auditBus {
	t.Helper()
	b := &auditBus{env: bustest.Start(t), logs: map[string]*audit.Log{}, logger: bustest.Logger(t)}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	b.ctx = ctx
	if _, err := natsstate.Init(ctx, b.env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	gw := b.env.Connect(t, "gateway")
	keyDir := t.TempDir()
	for _, id := range ids {
		kp, _, err := checkpoint.EnsureKey(keyDir, id, checkpoint.Origin(td, id))
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: id, Key: kp}, audit.WithLogger(b.logger), audit.WithCheckpointEvery(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		b.logs[id] = l
	}
	var err error
	if b.keys, err = checkpoint.LoadPublicKeys(keyDir); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(gw)
	b.records, _ = js.Stream(ctx, subject.AuditStream)
	b.ckpts, _ = js.Stream(ctx, subject.CheckpointStream)
	return b
}

// newIndex opens an index of the bus's streams on the store file at path
// (a new one where path is "").
func (b *auditBus) newIndex(t *testing.T, path string) (*index.Index, *index.Store) {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "index.db")
	}
	store, err := index.OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	return index.New(store, b.records, b.ckpts, td, b.keys, b.logger), store
}

// handOver declares l's log Own by ix and hands it each batch l commits,
// as the gateway does, its leaves' ckeys prefixed with mark. skip (if any)
// runs first, on the log's sequencer, with the batch's number counted from
// 1: a batch for which it is true is not handed over.
func handOver(ix *index.Index, l *audit.Log, mark string, skip func(batch int) bool) {
	batches := 0
	ix.Own(l.ID(), l.OnCommit(func(c audit.Committed) {
		batches++
		if skip != nil && skip(batches) {
			return
		}
		leaves := make([]index.Leaf, len(c.Leaves))
		for i, lf := range c.Leaves {
			leaves[i] = index.Leaf{Hash: lf.Hash, Prev: lf.Prev, CKey: mark + lf.CKey}
		}
		ix.AddCommitted(c.LogID, c.Seq, c.First, leaves)
	}))
}

// follow runs ix until the returned function stops it (and waits for it).
func follow(ctx context.Context, ix *index.Index) (stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { ix.Run(rctx); close(done) }()
	return func() { cancel(); <-done }
}
