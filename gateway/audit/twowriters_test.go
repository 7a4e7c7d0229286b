package audit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// Two writers of one log (the consent service's log is written by the
// holder of a lease; a holder paused past its lease — a GC, a frozen VM, a
// partition — still believes it writes) must never both be acknowledged
// for the same leaf. Within JetStream's deduplication window the batch's
// Nats-Msg-Id refuses the second; past it, nothing did: the stale writer's
// batch was stored as a second leaf 0 and its Append acknowledged, a record
// that is not in the log an auditor verifies. The stale writer must be
// refused, re-read the tail, and append after it.
func TestAStaleSecondWriterIsNotAcknowledgedPastTheDedupWindow(t *testing.T) {
	t.Parallel()
	f := newBareFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const window = time.Second // the least stream.Config allows
	if _, err := natsstate.Init(ctx, f.env.Connect(t, "operator"), stream.Config{Duplicates: window}); err != nil {
		t.Fatal(err)
	}
	opts := []audit.Option{audit.WithAckTimeout(2 * time.Second), audit.WithAckAttempt(200 * time.Millisecond), audit.WithRetryEvery(10 * time.Millisecond)}
	stale := f.open(t, f.env.Connect(t, "gateway"), "lease", opts...)
	fresh := f.open(t, f.env.Connect(t, "gateway"), "lease", opts...)
	if err := fresh.Append(ctx, decisionN(f, 1)); err != nil {
		t.Fatal(err)
	}
	waitDedupWindowOver(t, f)
	err := stale.Append(ctx, decisionN(f, 2))
	if !errors.Is(err, audit.ErrUnavailable) {
		t.Fatalf("the stale writer's append: %v, want ErrUnavailable (fresh holds leaf 0)", err)
	}
	// It re-read the tail: its next record follows fresh's.
	if err := stale.Append(ctx, decisionN(f, 3)); err != nil {
		t.Fatal(err)
	}
	recs := readLog(t, f, "lease")
	if len(recs) != 2 {
		for _, r := range recs {
			t.Logf("seq %d leaf %d", r.seq, r.rec.GetLeafIndex())
		}
		t.Fatalf("%d records stored, want 2 (no second leaf 0)", len(recs))
	}
	checkChain(t, recs)
	for _, c := range []*audit.Log{stale, fresh} {
		if err := c.Close(ctx); err != nil {
			t.Log(err)
		}
	}
}

// waitDedupWindowOver waits until a Nats-Msg-Id stored now is forgotten.
func waitDedupWindowOver(t *testing.T, f *fixture) {
	t.Helper()
	js, err := jetstream.New(f.env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	probe := func() (bool, error) {
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: "jisr.audit.probe._batch", Data: []byte("probe")}, jetstream.WithMsgID("probe"))
		if err != nil {
			return false, err
		}
		return ack.Duplicate, nil
	}
	if _, err := probe(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		dup, err := probe()
		if err != nil {
			t.Fatal(err)
		}
		if !dup {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(fmt.Errorf("the deduplication window never ended"))
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
