package watch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/watch"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

const td = "jisr.internal"

// A real log storing batches: a watcher hears of a batch holding a record
// about its citizen, in any log, and not of batches about others.
func TestAWatcherHearsOfItsCitizensRecordsInBatches(t *testing.T) {
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
		kp, _, err := checkpoint.EnsureKey(keyDir, id, checkpoint.Origin(td, id))
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: id, Key: kp}, audit.WithLogger(env.Log), audit.WithCheckpointEvery(time.Hour))
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
	w := watch.New(records, env.Log)
	defer w.Close()
	ck := env.Keyer.CKey
	alice, bob, carol := ck("AB123456"), ck("CD654321"), ck("EF000001")
	watchOf := func(ckey string) (<-chan struct{}, func()) {
		ch, stop, err := w.Watch(ctx, ckey)
		if err != nil {
			t.Fatal(err)
		}
		return ch, stop
	}
	aliceCh, stopAlice := watchOf(alice)
	bobCh, stopBob := watchOf(bob)
	defer stopBob()
	carolCh, stopCarol := watchOf(carol)
	defer stopCarol()
	// Others' records, with one about alice among them, appended at once
	// (so stored in batches), in gw-2.
	appendAll := func(l *audit.Log, ckeys ...string) {
		t.Helper()
		var wg sync.WaitGroup
		for _, k := range ckeys {
			wg.Go(func() {
				if err := l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: k, Code: codes.OK, Allowed: true}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	var others []string
	for i := range 100 {
		others = append(others, ck(fmt.Sprintf("XX%06d", i)))
	}
	appendAll(logs["gw-2"], append(others[:50:50], append([]string{alice}, others[50:]...)...)...)
	wait := func(ch <-chan struct{}, who string) {
		t.Helper()
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%s never heard of their record", who)
		}
	}
	wait(aliceCh, "alice")
	// The stream holds batches: the record about alice shared a message.
	info, err := records.Info(ctx)
	if err != nil || info.State.Msgs >= 101 {
		t.Fatalf("%v messages for 101 records (%v): the log did not batch", info.State.Msgs, err)
	}
	// Messages are handled in order: once carol hears of hers, bob would
	// have heard of any about him.
	appendAll(logs["gw-1"], append(others, carol)...)
	wait(carolCh, "carol")
	select {
	case <-bobCh:
		t.Fatal("bob heard of records about others")
	default:
	}
	// A stopped watch hears nothing more; the others still do.
	stopAlice()
	appendAll(logs["gw-1"], alice, bob)
	wait(bobCh, "bob")
	select {
	case <-aliceCh:
		t.Fatal("a stopped watch was woken")
	default:
	}
}

// CKeyOf reads exactly the ckey record.Parse reads.
func TestCKeyOfIsParsesCKey(t *testing.T) {
	for _, k := range []string{"", "CK", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		r := record.FromDecision(&decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: k, Fields: []string{"a.b"}, TraceID: "t"})
		r.LogId, r.LeafIndex, r.PrevLeafHash = "gw-1", 7, make([]byte, 32)
		b, err := record.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := watch.CKeyOf(b)
		p, err := record.Parse(b)
		if !ok || err != nil || got != p.GetCkey() || got != k {
			t.Fatalf("CKeyOf %q %v, Parse %q %v, want %q", got, ok, p.GetCkey(), err, k)
		}
	}
	if _, ok := watch.CKeyOf([]byte{0x4a, 0x05, 'a'}); ok {
		t.Fatal("a truncated record has a ckey")
	}
}

// The live view reads the stream only while someone watches: no consumer
// before the first watcher nor after the last one left, and a watcher
// after such a stop still hears of its citizen's records, in any log.
func TestTheStreamIsFollowedOnlyWhileWatched(t *testing.T) {
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
		kp, _, err := checkpoint.EnsureKey(keyDir, id, checkpoint.Origin(td, id))
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: id, Key: kp}, audit.WithLogger(env.Log), audit.WithCheckpointEvery(time.Hour))
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
	consumers := func() int {
		info, err := records.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	base := consumers() // the logs' own readers, if any
	w := watch.New(records, env.Log)
	defer w.Close()
	if n := consumers(); n != base {
		t.Fatalf("%d consumers with no watcher, want %d", n, base)
	}
	alice := env.Keyer.CKey("AB123456")
	appendOne := func(l *audit.Log) {
		t.Helper()
		if err := l.Append(ctx, &decision.Decision{Time: time.Now(), Consumer: "cnss", CKey: alice, Code: codes.OK, Allowed: true}); err != nil {
			t.Fatal(err)
		}
	}
	for round, log := range []string{"gw-1", "gw-2"} {
		ch, stop, err := w.Watch(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if n := consumers(); n != base+1 {
			t.Fatalf("round %d: %d consumers while watched, want %d", round, n, base+1)
		}
		appendOne(logs[log])
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("round %d: the watcher never heard of a record in %s", round, log)
		}
		stop()
		bustest.Eventually(t, 10*time.Second, func() error {
			if n := consumers(); n != base {
				return fmt.Errorf("%d consumers after the last watcher left, want %d", n, base)
			}
			return nil
		})
	}
}
