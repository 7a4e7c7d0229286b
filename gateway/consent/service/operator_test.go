package service_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/audit/auditor"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/consent/service"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

// The operator's grant and revocation (`jisr consent grant|revoke`) are
// asked of the running consent service, which writes each to its own audit
// log before doing it: with no consent service, the operator is refused and
// nothing changes; a member cannot ask (NATS permissions); the records are
// in the consent log, which verifies.
func TestOperatorGrantAndRevokeAreAuditedByTheConsentService(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := consent.InitKeys(certs); err != nil {
		t.Fatal(err)
	}
	store, err := consent.OpenStore(ctx, env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	op := consent.NewOperatorClient(env.Connect(t, "operator"))
	ckey := env.Keyer.CKey("BK482913")
	grant := consent.GrantRequest{To: "cnss", Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"}, Purpose: "amo-enrolment", TTL: "1h"}
	unrecorded := "operator-test-unrecorded-jti"

	// No consent service: refused, nothing revoked, nothing minted.
	if _, err := op.Revoke(ctx, unrecorded); !errors.Is(err, consent.ErrNoConsentService) {
		t.Fatalf("revoke with no consent service: %v, want ErrNoConsentService", err)
	}
	if _, err := op.Grant(ctx, ckey, grant); !errors.Is(err, consent.ErrNoConsentService) {
		t.Fatalf("grant with no consent service: %v, want ErrNoConsentService", err)
	}
	if revoked, err := store.RevokedInBucket(ctx, unrecorded); err != nil || revoked {
		t.Fatalf("revoked with no consent service: %v %v", revoked, err)
	}
	if gs, err := store.List(ctx, ckey); err != nil || len(gs) != 0 {
		t.Fatalf("grants with no consent service: %v %v", gs, err)
	}

	s, err := service.Start(ctx, service.Config{Federation: env.Fed, CertsDir: certs, Conn: env.Connect(t, "consent"), Log: env.Log},
		service.WithSweeperRetry(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// A member publishing on the operator API is refused by the server:
	// the request reaches no consent service.
	cnss := env.Connect(t, "cnss")
	if _, err := cnss.Request(consent.SubjectOperatorRevoke, []byte(`{"jti":"`+unrecorded+`"}`), time.Second); err == nil {
		t.Fatal("a member's request on the operator API was answered")
	}

	resp, err := op.Grant(ctx, ckey, grant) // the first call may wait for the lease holder
	if err != nil {
		t.Fatal(err)
	}
	if _, err := consent.Inspect(s.Service.Keys, resp.Token, time.Now()); err != nil {
		t.Fatalf("the operator's token: %v", err)
	}
	if g, err := op.Revoke(ctx, resp.ID); err != nil || g == nil || g.ID != resp.ID || !g.Revoked {
		t.Fatalf("revoke the operator's grant: %+v %v", g, err)
	}
	if g, err := op.Revoke(ctx, unrecorded); err != nil || g != nil {
		t.Fatalf("revoke an unrecorded jti: %+v %v", g, err)
	}
	if _, err := op.Revoke(ctx, "*"); !errors.Is(err, consent.ErrBadID) {
		t.Fatalf("revoke *: %v", err)
	}
	for _, jti := range []string{resp.ID, unrecorded} {
		if revoked, err := store.RevokedInBucket(ctx, jti); err != nil || !revoked {
			t.Fatalf("%s not revoked: %v", jti, err)
		}
	}
	if revoked, _ := store.RevokedInBucket(ctx, "*"); revoked {
		t.Fatal("revoked *")
	}
	s.Stop() // its final checkpoint

	keys, err := checkpoint.LoadPublicKeys(filepath.Join(certs, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.Config{TrustDomain: env.Fed.TrustDomain.Name(), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	streams, err := auditor.Open(ctx, env.Connect(t, "auditor"))
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Verify(ctx, v, noProgress{}); err != nil {
		t.Fatal(err)
	}
	if rep := v.Finish(); !rep.OK() || len(rep.Logs) != 1 || rep.Logs[0].ID != consent.AuditLogID {
		t.Fatalf("verification: ok %v, problems %v, logs %+v", rep.OK(), rep.Problems, rep.Logs)
	}
	sel := &auditor.Selection{Log: consent.AuditLogID}
	if err := sel.Resolve(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	if err := streams.Query(ctx, sel, func(_ stream.Msg, r *auditv1.Record) error {
		if r.GetReason() != consent.ReasonOperatorAction {
			t.Errorf("record %v", r)
		}
		if r.GetTokenId() == resp.ID && (r.GetCkey() != ckey || r.GetConsumer() != "cnss" || r.GetPurpose() != "amo-enrolment") {
			t.Errorf("record of the operator's grant %v", r)
		}
		seen[r.GetTokenId()+" "+r.GetMethod()]++
		return nil
	}, func(seq uint64) { t.Errorf("unreadable record at %d", seq) }); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		resp.ID + " " + consent.ActionOperatorGrant: 1, resp.ID + " " + consent.ActionOperatorRevoke: 1,
		unrecorded + " " + consent.ActionOperatorRevoke: 1,
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("records %v, want %v", seen, want)
	}
}
