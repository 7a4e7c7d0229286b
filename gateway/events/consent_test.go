package events_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/events"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// A rule on consent: tax learns of a marriage only while the citizen holds
// an active grant to tax for it.
const consentRule = `
  - name: tax-marriages
    consumer: tax
    publisher: civil-registry
    events: [MarriageRecorded]
    fields: [marriage_recorded.date]
    purpose: household-tax
    legal_basis: consent
`

// Deliveries on consent, attacked: no grant, another consumer's grant, an
// expired, a paused and a revoked grant each deliver nothing (an audited
// CONSENT_REQUIRED); an active grant delivers, minimised, audited with its
// jti; a consent state that cannot be read refuses the publication
// Unavailable (audited, nothing delivered) and the same event published
// again once it is back is delivered.
func TestConsentAsTheLegalBasisOfAnEventRule(t *testing.T) {
	env := bustest.Start(t, bustest.WithFederation(append(bustest.FederationYAML(), consentRule...)))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	op := env.Connect(t, "operator")
	if _, err := natsstate.InitSpecs(ctx, op, natsstate.Buckets()); err != nil {
		t.Fatal(err)
	}
	store, err := consent.OpenStore(ctx, env.Connect(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	store.WatchEvery = 100 * time.Millisecond
	if err := store.WatchRevocations(ctx); err != nil {
		t.Fatal(err)
	}
	f := startWith(t, env, func(c *events.Config) {
		c.Consents = consent.EventConsents{Store: store}
	})
	// The consent service's side: it records grants, revocations, pauses.
	cs := env.Connect(t, "consent")
	writer, err := consent.OpenStore(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	revocations, err := mustJS(t, cs).KeyValue(ctx, subject.RevocationBucket)
	if err != nil {
		t.Fatal(err)
	}

	ck := env.Keyer.CKey("AB123")
	member := func(n string) string { m, _ := env.Fed.Member(n); return m.ID.String() }
	grant := func(jti, to string, expires time.Time) {
		t.Helper()
		c := &consent.Claims{ID: jti, Subject: ck, Audience: member(to), IssuedAt: time.Now().Add(-time.Minute).Unix(),
			Expiry: expires.Unix(), Purpose: "household-tax", LegalBasis: federation.BasisConsent,
			AuthorizationDetails: []consent.Detail{{Type: "jisr", Service: events.Service, Methods: []string{"MarriageRecorded"}, Fields: []string{"marriage_recorded.date"}}}}
		if err := writer.Record(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	subj, err := subject.Event{Publisher: "civil-registry", Type: "MarriageRecorded", CKey: ck}.Subject()
	if err != nil {
		t.Fatal(err)
	}
	married := func(id string) *eventsv1.Event {
		return &eventsv1.Event{Id: id, Time: timestamppb.Now(), Eid: "ab123", Payload: &eventsv1.Event_MarriageRecorded{MarriageRecorded: &eventsv1.MarriageRecorded{
			Date: &jisrv1.Date{Year: 2026, Month: 11, Day: 27}, SpouseEid: "CD456", ActNumber: "M-9",
		}}}
	}
	delivers := func(id string, want int32) {
		t.Helper()
		got, err := f.publish(t, "civil-registry", married(id), subj)
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		if got.GetDeliveries() != want {
			t.Fatalf("publish %s: %d deliveries, want %d", id, got.GetDeliveries(), want)
		}
	}
	// last is the last record about tax.
	last := func() *decision.Decision {
		all := f.audit.list()
		for i := len(all) - 1; i >= 0; i-- {
			if all[i].Consumer == "tax" {
				return all[i]
			}
		}
		return nil
	}
	refused := func(what string) {
		t.Helper()
		d := last()
		if d == nil || d.Allowed || d.Reason != decision.ReasonConsentRequired || d.Rule != "tax-marriages" || d.CKey != ck || d.Method != "MarriageRecorded" {
			t.Fatalf("%s: last record about tax %+v, want a refusal CONSENT_REQUIRED", what, d)
		}
	}
	taxHas := func(want int) []*eventsv1.Event {
		t.Helper()
		var out []*eventsv1.Event
		for _, m := range f.read(t, "tax") {
			ev := &eventsv1.Event{}
			if err := proto.Unmarshal(m.Data(), ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, ev)
		}
		if len(out) != want {
			t.Fatalf("tax received %d events, want %d", len(out), want)
		}
		return out
	}

	delivers("marriage-no-grant-0001", 0)
	refused("no grant")
	grant("jti-of-cnss-000000001", "cnss", time.Now().Add(time.Hour))
	grant("jti-expired-00000001", "tax", time.Now().Add(-time.Second))
	delivers("marriage-other-grant1", 0)
	refused("another consumer's grant, an expired grant")
	taxHas(0)

	grant("jti-paused-000000001", "tax", time.Now().Add(time.Hour))
	delivers("marriage-granted-0001", 1)
	d := last()
	if !d.Allowed || d.TokenID != "jti-paused-000000001" || d.LegalBasis != federation.BasisConsent || d.Law != "" || slices.Contains(d.Fields, "marriage_recorded.spouse_eid") {
		t.Fatalf("record of a delivery on consent %+v", d)
	}
	if got := taxHas(1)[0]; got.GetMarriageRecorded().GetSpouseEid() != "" || got.GetMarriageRecorded().GetActNumber() != "" || got.GetMarriageRecorded().GetDate().GetYear() != 2026 {
		t.Fatalf("tax received %v: not minimised to the rule", got)
	}
	if _, err := revocations.Put(ctx, consent.PauseKey("jti-paused-000000001"), []byte("paused")); err != nil {
		t.Fatal(err)
	}
	delivers("marriage-paused-00001", 0)
	refused("a paused grant")

	grant("jti-revoked-00000001", "tax", time.Now().Add(time.Hour))
	delivers("marriage-granted-0002", 1)
	if d := last(); d.TokenID != "jti-revoked-00000001" {
		t.Fatalf("delivered under %q, want the active grant", d.TokenID)
	}
	if _, err := writer.Revoke(ctx, "jti-revoked-00000001"); err != nil {
		t.Fatal(err)
	}
	delivers("marriage-revoked-0001", 0)
	refused("a revoked grant")
	taxHas(2)

	// The consent state unavailable: the revocation bucket is gone.
	grant("jti-active-000000001", "tax", time.Now().Add(time.Hour))
	if err := mustJS(t, op).DeleteStream(ctx, subject.BucketStream(subject.RevocationBucket)); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		if store.Ready() == nil {
			return errors.New("the consent state still reads as ready")
		}
		return nil
	})
	_, err = f.publish(t, "civil-registry", married("marriage-unavailable1"), subj)
	if status.Code(err) != codes.Unavailable || decision.ReasonOf(status.Convert(err)) != decision.ReasonConsentStateUnavailable {
		t.Fatalf("publish while the consent state is unavailable: %v, want Unavailable %s", err, decision.ReasonConsentStateUnavailable)
	}
	if d := last(); d.Allowed || d.Reason != decision.ReasonConsentStateUnavailable || d.Code != codes.Unavailable {
		t.Fatalf("record %+v, want an audited CONSENT_STATE_UNAVAILABLE", d)
	}
	taxHas(2)
	// Back: the publisher publishes the same event again, and it arrives.
	if _, err := natsstate.InitSpecs(ctx, op, natsstate.Buckets()); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 20*time.Second, store.Ready)
	delivers("marriage-unavailable1", 1)
	if d := last(); !d.Allowed || d.TokenID != "jti-active-000000001" {
		t.Fatalf("record %+v, want the delivery under the active grant", d)
	}
	// The paused and the revoked grant stay so in this replica.
	if got := taxHas(3); got[2].GetId() != "marriage-unavailable1" {
		t.Fatalf("tax received %v last", got[2])
	}
}
