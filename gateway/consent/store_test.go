package consent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// A use counter that is not a count — empty, garbage, negative, or erased
// with a delete marker — was not written by a gateway: the token is used up.
func TestUseCountsAnUnreadableCounterAsUsedUp(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	store, err := consent.OpenStore(ctx, env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	// The tampering writer: only a gateway may write a use counter (the
	// consent service may not), so a compromised gateway replica.
	js, err := jetstream.New(env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	usage, err := js.KeyValue(ctx, subject.UsageBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		tamper func(key string) error
	}{
		{"empty", func(k string) error { _, err := usage.Put(ctx, k, nil); return err }},
		{"garbage", func(k string) error { _, err := usage.Put(ctx, k, []byte("zero")); return err }},
		{"negative", func(k string) error { _, err := usage.Put(ctx, k, []byte("-5")); return err }},
		{"delete marker", func(k string) error {
			if _, err := usage.Put(ctx, k, []byte("2")); err != nil {
				return err
			}
			return usage.Delete(ctx, k)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			jti := "tamper-" + map[string]string{"empty": "a", "garbage": "b", "negative": "c", "delete marker": "d"}[c.name]
			if err := c.tamper(jti); err != nil {
				t.Fatal(err)
			}
			if err := store.Use(ctx, jti, 10); !errors.Is(err, consent.ErrUsedUp) {
				t.Fatalf("use after a %s counter: %v, want used up", c.name, err)
			}
		})
	}
	// An untouched counter counts exactly.
	for i := range 3 {
		if err := store.Use(ctx, "fresh", 3); err != nil {
			t.Fatalf("use %d: %v", i+1, err)
		}
	}
	if err := store.Use(ctx, "fresh", 3); !errors.Is(err, consent.ErrUsedUp) {
		t.Fatalf("fourth use of three: %v", err)
	}
}
