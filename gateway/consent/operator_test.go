package consent_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// The operator API fails closed: when the action's record cannot be made
// durable, a revocation is not done, and a grant's token is not released
// (and is revoked at once).
func TestOperatorActionsFailClosedWithoutTheirRecord(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := consent.InitKeys(certs); err != nil {
		t.Fatal(err)
	}
	keys, err := consent.LoadKeys(certs)
	if err != nil {
		t.Fatal(err)
	}
	cs := env.Connect(t, "consent")
	store, err := consent.OpenStore(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	down := func(context.Context, *decision.Decision) error { return errors.New("the audit stream is down") }
	svc := &consent.Service{Issuer: consent.NewIssuer(keys, env.Fed.ID("consent")), Store: store, Keys: keys, Federation: env.Fed, Log: env.Log}
	r, err := consent.ServeOperator(cs, svc, down)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Unsubscribe()
	op := consent.NewOperatorClient(env.Connect(t, "operator"))
	ckey := env.Keyer.CKey("BK482913")

	jti := "operator-fail-closed-jti"
	if _, err := op.Revoke(ctx, jti); !errors.Is(err, consent.ErrUnavailable) {
		t.Fatalf("revoke without its record: %v, want unavailable", err)
	}
	if revoked, err := store.RevokedInBucket(ctx, jti); err != nil || revoked {
		t.Fatalf("revoked without its record: %v %v", revoked, err)
	}
	resp, err := op.Grant(ctx, ckey, consent.GrantRequest{To: "cnss", Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"}, Purpose: "amo-enrolment", TTL: "1h"})
	if err == nil || resp != nil {
		t.Fatalf("grant without its record: %+v %v, want refused", resp, err)
	}
	gs, err := store.List(ctx, ckey)
	if err != nil || len(gs) != 1 {
		t.Fatalf("grants %v %v, want the one minted", gs, err)
	}
	for _, g := range gs {
		if revoked, err := store.RevokedInBucket(ctx, g.ID); err != nil || !revoked {
			t.Errorf("the token minted for a grant whose record failed is not revoked: %s %v", g.ID, err)
		}
	}
}
