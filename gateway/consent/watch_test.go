package consent_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// insiderJS connects with an identity that may manage streams and buckets:
// the operator once the federation has one, else the gateway.
func insiderJS(t *testing.T, env *bustest.Env) jetstream.JetStream {
	t.Helper()
	for _, id := range []string{"operator", "gateway"} {
		nc, err := env.Dial(id, env.Source(t, env.ID(id)))
		if err != nil {
			continue
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	t.Fatal("no identity may manage buckets")
	return nil
}

// eventually waits up to 20s until cond holds (bustest.Eventually).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	bustest.Eventually(t, 20*time.Second, func() error { return bustest.Check(cond(), what) })
}

// refusedFor reports the reason of a refused call ("" when it was answered).
func (f *fed) refusedFor(t *testing.T, token string) (codes.Code, string) {
	t.Helper()
	_, err := f.call(t, f.cnss, "cnss", citizen, token, purpose)
	st := status.Convert(err)
	return st.Code(), decision.ReasonOf(st)
}

func TestAStoppedRevocationWatchClosesTheGateway(t *testing.T) {
	t.Parallel()
	f := start(t, 1)
	gw, store := f.gws[0], f.stores[0]
	tok, _ := f.grant(t, nil)
	if err := gw.Ready(); err != nil {
		t.Fatalf("not ready at start: %v", err)
	}
	if _, err := f.call(t, f.cnss, "cnss", citizen, tok, purpose); err != nil {
		t.Fatal(err)
	}
	// A revocation made before the watch stops stays in force after it is back.
	_, revoked := f.grant(t, func(r *consent.Request) { r.Purpose = "family-allowance" })
	if _, err := f.store.Revoke(context.Background(), revoked.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the revocation reaches the gateway", func() bool { return store.Revoked(revoked.ID) })

	// The revocation bucket is deleted (an insider): the watch has nothing
	// to read, and the gateway must not pretend it has.
	js := insiderJS(t, f.env)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := js.DeleteKeyValue(ctx, subject.RevocationBucket); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the gateway reports not ready", func() bool { return gw.Ready() != nil })
	if !errors.Is(store.Ready(), consent.ErrStateUnavailable) || !strings.Contains(gw.Ready().Error(), "consent") {
		t.Fatalf("readiness: %v", gw.Ready())
	}
	if code, reason := f.refusedFor(t, tok); code != codes.Unavailable || reason != decision.ReasonConsentStateUnavailable {
		t.Fatalf("a token query while the watch is stopped: %v %s, want Unavailable %s", code, reason, decision.ReasonConsentStateUnavailable)
	}

	// The bucket comes back (empty): the watch re-reads it, the gateway is
	// ready again, the token works, and the revocation is not forgotten.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: subject.RevocationBucket, History: 1, TTL: consent.MaxTTL + 24*time.Hour, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the gateway is ready again", func() bool { return gw.Ready() == nil })
	if _, err := f.call(t, f.cnss, "cnss", citizen, tok, purpose); err != nil {
		t.Fatalf("a token query once the watch is back: %v", err)
	}
	if !store.Revoked(revoked.ID) {
		t.Fatal("a revocation was forgotten when its bucket was replaced")
	}
	if store.Tampered() == 0 {
		t.Fatal("the replaced bucket was not counted as tampering")
	}

	// JetStream goes away altogether.
	f.env.Server.NATS().DisableJetStream()
	eventually(t, "the gateway reports not ready without JetStream", func() bool { return gw.Ready() != nil })
	if code, reason := f.refusedFor(t, tok); code != codes.Unavailable || reason != decision.ReasonConsentStateUnavailable {
		t.Fatalf("a token query without JetStream: %v %s", code, reason)
	}
}

func TestDeletingARevocationIsTamperingAndDoesNotUnrevoke(t *testing.T) {
	var logs lockedBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	f := start(t, 1)
	store := f.stores[0]
	tokDel, cDel := f.grant(t, nil)
	tokPurge, cPurge := f.grant(t, func(r *consent.Request) { r.Fields = []string{"person.sex"} })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, id := range []string{cDel.ID, cPurge.ID} {
		if _, err := f.store.Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both revocations reach the gateway", func() bool { return store.Revoked(cDel.ID) && store.Revoked(cPurge.ID) })

	// Someone with write access to the bucket deletes one entry and purges
	// the other.
	nc := f.env.Connect(t, "consent")
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, subject.RevocationBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, cDel.ID); err != nil {
		t.Fatal(err)
	}
	// The bucket refuses roll-ups, so a KV purge is refused outright...
	if err := kv.Purge(ctx, cPurge.ID); err == nil {
		t.Fatal("a KV purge of a revocation was accepted: the bucket allows roll-ups")
	}
	// ...but a writer can still publish a bare PURGE marker (no roll-up
	// header). It is tampering too, and must not un-revoke.
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "$KV." + subject.RevocationBucket + "." + cPurge.ID,
		Header: nats.Header{"KV-Operation": []string{"PURGE"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both are seen as tampering", func() bool { return store.Tampered() >= 2 })
	for _, tok := range []string{tokDel, tokPurge} {
		if code, reason := f.refusedFor(t, tok); code != codes.PermissionDenied || reason != consent.ReasonRevoked {
			t.Fatalf("a revoked token after its revocation was deleted: %v %s, want %s", code, reason, consent.ReasonRevoked)
		}
	}
	for _, want := range []string{"level=ERROR", "TAMPERING", "operation=DEL jti=" + cDel.ID, "operation=PURGE jti=" + cPurge.ID} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("the log does not say %q:\n%s", want, logs.String())
		}
	}
	// A replica started after the delete reads the markers: still revoked.
	late, err := consent.OpenStore(ctx, f.env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	if err := late.WatchRevocations(wctx); err != nil {
		t.Fatal(err)
	}
	if !late.Revoked(cDel.ID) || !late.Revoked(cPurge.ID) || late.Tampered() < 2 {
		t.Fatalf("a replica started later: revoked %v %v, tampering %d", late.Revoked(cDel.ID), late.Revoked(cPurge.ID), late.Tampered())
	}
	if err := late.Ready(); err != nil {
		t.Fatalf("a replica started later is not ready: %v", err)
	}
}

func TestAWatchThatStopsMovingIsNoticed(t *testing.T) {
	t.Parallel()
	f := start(t, 1)
	gw, store := f.gws[0], f.stores[0]
	tok, c := f.grant(t, nil)
	if _, err := f.call(t, f.cnss, "cnss", citizen, tok, purpose); err != nil {
		t.Fatal(err)
	}
	// The watch's consumer is paused (an insider): it exists, it is
	// healthy, and it delivers nothing more.
	js := insiderJS(t, f.env)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	rs, err := js.Stream(ctx, "KV_"+subject.RevocationBucket)
	if err != nil {
		t.Fatal(err)
	}
	var paused []string
	for name := range rs.ConsumerNames(ctx).Name() {
		if _, err := rs.PauseConsumer(ctx, name, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		paused = append(paused, name)
	}
	if len(paused) == 0 {
		t.Fatal("no watch consumer")
	}
	// A revocation now cannot reach the gateway: it must stop accepting
	// tokens rather than accept a revoked one.
	if _, err := f.store.Revoke(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stalled watch is noticed", func() bool {
		err := gw.Ready()
		return err != nil && strings.Contains(err.Error(), "stalled")
	})
	// Refused: as every token is while the watch is stalled, or as revoked
	// once the watch has repaired itself (consent.RepairAfter).
	if code, reason := f.refusedFor(t, tok); reason != decision.ReasonConsentStateUnavailable && reason != consent.ReasonRevoked {
		t.Fatalf("a token query while the watch is stalled: %v %s", code, reason)
	}
	// The stalled consumer stays paused: the watch replaces it by itself.
	eventually(t, "the watch moves again", func() bool { return gw.Ready() == nil && store.Revoked(c.ID) })
	for _, name := range paused {
		if _, err := rs.ResumeConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
	}
	if code, reason := f.refusedFor(t, tok); reason != consent.ReasonRevoked {
		t.Fatalf("the revoked token once the watch is back: %v %s", code, reason)
	}
}
