package service_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/fedwatch"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/consent/service"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// The consent service follows the signed federation versions without a
// restart, under its own NATS identity (direct get of the bundle): before
// the version that adds the member justice and its consent rule, a consent
// request and a citizen's grant for justice are refused (not a member);
// after it, both succeed and the approval mints a token for justice. A
// version that removes the rule lets no request for it be approved — not
// even one asked under the earlier version — and no new one be asked. A
// bundle with a bad signature and one not newer are refused and counted,
// and the running version stays. Without the federation bucket the
// service does not start.
func TestConsentServiceAppliesNewFederationVersionWithoutRestart(t *testing.T) {
	t.Parallel()
	base, err := os.ReadFile("../../../bus/testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := bustest.Start(t, bustest.WithFederation(base))
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	op := env.Connect(t, subject.Operator)
	if _, err := natsstate.Init(ctx, op, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := consent.InitKeys(certs); err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func() service.Config {
		return service.Config{Federation: env.Fed, CertsDir: certs, Conn: env.Connect(t, "consent"), Log: env.Log,
			Governance: []ed25519.PublicKey{pub}, FederationPoll: 50 * time.Millisecond}
	}

	// Fail closed: no bucket, no consent service.
	if err := js.DeleteKeyValue(ctx, subject.FederationBucket); err != nil {
		t.Fatal(err)
	}
	if s, err := service.Start(ctx, cfg()); err == nil {
		s.Stop()
		t.Fatal("the consent service started without the federation bucket")
	} else if !strings.Contains(err.Error(), subject.FederationBucket) {
		t.Fatalf("start without the bucket: %v", err)
	}
	if _, err := natsstate.Init(ctx, op, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, subject.FederationBucket)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(version uint64, yaml []byte, signer ed25519.PrivateKey) {
		t.Helper()
		raw, err := federation.Sign(&federation.Bundle{Version: version, Created: time.Now(), Federation: yaml, Descriptors: env.Fed.Descriptors}, signer)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, subject.FederationKey, raw); err != nil {
			t.Fatal(err)
		}
	}

	s, err := service.Start(ctx, cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if err := s.Ready(); err != nil {
		t.Fatalf("ready: %v", err)
	}
	if v := s.FederationVersion(); v != 0 {
		t.Fatalf("version %d in force before any was published", v)
	}
	// The gateway's side of the consent API, over NATS.
	gw := consent.NewClient(env.Connect(t, "gateway"))
	ckey := env.Keyer.CKey("BK482913")
	const svc = "jisr.civilregistry.v1.CivilRegistry"
	ask := consent.AskRequest{Service: svc, Methods: []string{"IsAlive"}, Purpose: "criminal-record-check", TTL: "1h"}
	grant := consent.GrantRequest{To: "justice", Service: svc, Methods: []string{"IsAlive"}, Purpose: "criminal-record-check", TTL: "1h"}
	if _, err := gw.Ask(ctx, "justice", ckey, ask); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("a request for justice before it is a member: %v", err)
	}
	if _, err := gw.Grant(ctx, ckey, grant); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("a grant to justice before it is a member: %v", err)
	}

	// Version 1: justice joins, with a consent rule on the civil registry.
	member := `
  - name: justice
    title: Ministry of justice
    titles: {fr: "Ministère de la justice", ar: "وزارة العدل"}
`
	rule := `
  - name: justice-alive
    consumer: justice
    provider: civil-registry
    service: jisr.civilregistry.v1.CivilRegistry
    methods: [IsAlive]
    purposes: [criminal-record-check]
    legal_basis: consent
`
	withMember := bytes.Replace(base, []byte("\n# What the citizen's page shows"), []byte(member+"\n# What the citizen's page shows"), 1)
	if bytes.Equal(withMember, base) {
		t.Fatal("the test federation changed: no place found for the new member")
	}
	v1 := bytes.Replace(withMember, []byte("\nrules:\n"), []byte("\nrules:"+rule+"\n"), 1)
	publish(1, v1, key)
	waitVersion := func(want uint64) {
		t.Helper()
		bustest.Eventually(t, 20*time.Second, func() error {
			if v := s.FederationVersion(); v != want {
				return fmt.Errorf("version %d in force, want %d", v, want)
			}
			return nil
		})
	}
	waitVersion(1)
	justice, err := s.Service.FederationNow().Member("justice")
	if err != nil {
		t.Fatal(err)
	}
	r, err := gw.Ask(ctx, "justice", ckey, ask)
	if err != nil {
		t.Fatalf("a request for the member version 1 added: %v", err)
	}
	d, err := gw.Decide(ctx, ckey, r.ID, consent.Decision{Approve: true})
	if err != nil {
		t.Fatalf("the citizen's approval: %v", err)
	}
	if d.State != consent.StateActive || d.JTI == "" {
		t.Fatalf("approved: state %s, jti %q", d.State, d.JTI)
	}
	g, err := gw.Grant(ctx, ckey, grant)
	if err != nil {
		t.Fatalf("a grant to the member version 1 added: %v", err)
	}
	// The tokens name justice: the consumer the gateway will see.
	grants, err := s.Service.List(ctx, ckey)
	if err != nil {
		t.Fatal(err)
	}
	minted := 0
	for _, gr := range grants {
		if (gr.ID == d.JTI || gr.ID == g.ID) && gr.Consumer == justice.ID.String() {
			minted++
		}
	}
	if minted != 2 {
		t.Fatalf("%d of the 2 grants recorded for %s: %+v", minted, justice.ID, grants)
	}

	// A request asked under version 1, still pending when version 2
	// removes the rule.
	pending, err := gw.Ask(ctx, "justice", ckey, ask)
	if err != nil {
		t.Fatal(err)
	}
	publish(2, withMember, key)
	waitVersion(2)
	if _, err := gw.Decide(ctx, ckey, pending.ID, consent.Decision{Approve: true}); err == nil || !strings.Contains(err.Error(), "no access rule") {
		t.Fatalf("approving a request whose rule version 2 removed: %v", err)
	}
	if _, err := gw.Ask(ctx, "justice", ckey, ask); err == nil || !strings.Contains(err.Error(), "no access rule") {
		t.Fatalf("a request under a rule version 2 removed: %v", err)
	}

	// Refused bundles: the running version stays.
	_, other, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	publish(3, v1, other)
	bustest.Eventually(t, 20*time.Second, func() error {
		if n := s.FederationRefused(fedwatch.ReasonBadSignature); n != 1 {
			return fmt.Errorf("%v bad signatures refused", n)
		}
		return nil
	})
	publish(1, v1, key)
	bustest.Eventually(t, 20*time.Second, func() error {
		if n := s.FederationRefused(fedwatch.ReasonNotNewer); n != 1 {
			return fmt.Errorf("%v older versions refused", n)
		}
		return nil
	})
	if v := s.FederationVersion(); v != 2 {
		t.Fatalf("version %d in force after the refused bundles", v)
	}
	if _, err := gw.Ask(ctx, "justice", ckey, ask); err == nil || !strings.Contains(err.Error(), "no access rule") {
		t.Fatalf("a request after the refused bundles: %v", err)
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("ready: %v", err)
	}
}
