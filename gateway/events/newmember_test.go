package events_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus"
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

// A member a new federation version adds, whose event rule rests on the
// citizen's consent: its deliveries are decided under that version — the
// consent lookup reads its SPIFFE ID from the version in force, not from
// the federation the service started with. Until the operator creates its
// stream each delivery to it is refused EVENT_STREAM_MISSING (audited; the
// gateway creates nothing, the other deliveries go on); once the stream
// exists, the next event after the citizen's consent is delivered,
// minimised, audited with the grant's jti.
func TestANewMemberOnConsentIsDecidedUnderTheNewVersion(t *testing.T) {
	const housing = `
  - name: housing
    title: Housing agency
`
	const housingRule = `
  - name: housing-marriages
    consumer: housing
    publisher: civil-registry
    events: [MarriageRecorded]
    fields: [marriage_recorded.date]
    purpose: housing-aid
    legal_basis: consent
    replay: true
`
	base := bustest.FederationYAML()
	at := []byte("\n# What the citizen's page shows")
	if !bytes.Contains(base, at) {
		t.Fatal("the test federation changed: no labels section after members")
	}
	v1YAML := append(bytes.Replace(base, at, append([]byte(housing), at...), 1), housingRule...)
	env := bustest.Start(t, bustest.WithFederation(v1YAML)) // the bus knows housing (its certificate, its permissions)
	v0, err := federation.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v0.Member("housing"); err == nil {
		t.Fatal("version 0 has housing")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	since := time.Now().Add(-time.Minute)
	op := env.Connect(t, "operator")
	// The operator created the streams of version 0 only.
	if _, err := natsstate.InitSpecs(ctx, op, append(natsstate.Buckets(), natsstate.EventSpecs(v0, 1)...)); err != nil {
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
	gw := env.Connect(t, "gateway")
	f := &fixture{env: env, audit: &decisions{}}
	if f.ev, err = events.New(events.Config{Federation: v0, Keyer: env.Keyer, Conn: gw, Audit: f.audit, Log: env.Log,
		Consents: consent.EventConsents{Store: store}}); err != nil {
		t.Fatal(err)
	}
	if err := f.ev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.ev.Stop(context.Background()) })
	writer, err := consent.OpenStore(ctx, env.Connect(t, "consent"))
	if err != nil {
		t.Fatal(err)
	}

	ck := env.Keyer.CKey("AB123")
	subj, err := subject.Event{Publisher: "civil-registry", Type: "MarriageRecorded", CKey: ck}.Subject()
	if err != nil {
		t.Fatal(err)
	}
	publish := func(id string, want int32) {
		t.Helper()
		ev := &eventsv1.Event{Id: id, Time: timestamppb.Now(), Eid: "ab123", Payload: &eventsv1.Event_MarriageRecorded{MarriageRecorded: &eventsv1.MarriageRecorded{
			Date: &jisrv1.Date{Year: 2026, Month: 11, Day: 27}, SpouseEid: "CD456", ActNumber: "M-9",
		}}}
		got, err := f.publish(t, "civil-registry", ev, subj)
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		if got.GetDeliveries() != want {
			t.Fatalf("publish %s: %d deliveries, want %d", id, got.GetDeliveries(), want)
		}
	}
	last := func() *decision.Decision {
		all := f.audit.list()
		for i := len(all) - 1; i >= 0; i-- {
			if all[i].Consumer == "housing" {
				return all[i]
			}
		}
		return nil
	}

	// Version 0: no rule for housing, nothing about it.
	publish("newmember-marriage-0001", 0)
	if d := last(); d != nil {
		t.Fatalf("version 0 decided a delivery to housing: %+v", d)
	}

	// Version 1 adds housing and its rule; the citizen consents.
	if err := f.ev.SetFederation(env.Fed); err != nil {
		t.Fatal(err)
	}
	m, err := env.Fed.Member("housing")
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Record(ctx, &consent.Claims{ID: "jti-housing-00000001", Subject: ck, Audience: m.ID.String(),
		IssuedAt: time.Now().Add(-time.Minute).Unix(), Expiry: time.Now().Add(time.Hour).Unix(), Purpose: "housing-aid",
		LegalBasis:           federation.BasisConsent,
		AuthorizationDetails: []consent.Detail{{Type: "jisr", Service: events.Service, Methods: []string{"MarriageRecorded"}, Fields: []string{"marriage_recorded.date"}}}}); err != nil {
		t.Fatal(err)
	}

	// Its stream does not exist yet: refused, audited, nothing created.
	publish("newmember-marriage-0002", 0)
	d := last()
	if d == nil || d.Allowed || d.Reason != decision.ReasonEventStreamMissing || d.Code != codes.FailedPrecondition ||
		d.Rule != "housing-marriages" || d.CKey != ck || d.Provider != "civil-registry" || d.Method != "MarriageRecorded" {
		t.Fatalf("delivery to housing without its stream: last record %+v, want EVENT_STREAM_MISSING", d)
	}
	replay := func() (*eventsv1.ReplayResponse, error) {
		t.Helper()
		data, _ := proto.Marshal(&eventsv1.ReplayRequest{Since: timestamppb.New(since)})
		reply, err := bus.Call(ctx, env.Connect(t, "housing"), &nats.Msg{Subject: subject.Replay("housing"), Data: data, Header: nats.Header{}})
		if err != nil {
			return nil, err
		}
		out := &eventsv1.ReplayResponse{}
		return out, proto.Unmarshal(reply.Data, out)
	}
	if _, err := replay(); status.Code(err) != codes.FailedPrecondition || decision.ReasonOf(status.Convert(err)) != decision.ReasonEventStreamMissing {
		t.Fatalf("replay for housing without its stream: %v, want FailedPrecondition EVENT_STREAM_MISSING", err)
	}
	if d := last(); d == nil || d.Method != events.ReplayMethod || d.Reason != decision.ReasonEventStreamMissing {
		t.Fatalf("replay for housing without its stream: last record %+v, want it audited", d)
	}
	if _, err := mustJS(t, op).Stream(ctx, subject.EventStream("housing")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("housing's stream: %v, want none (only the operator creates streams)", err)
	}

	// The operator runs nats init with version 1: the next event reaches
	// housing, under its consent.
	if _, err := natsstate.InitSpecs(ctx, op, natsstate.EventSpecs(env.Fed, 1)); err != nil {
		t.Fatal(err)
	}
	publish("newmember-marriage-0003", 1)
	d = last()
	if d == nil || !d.Allowed || d.Rule != "housing-marriages" || d.TokenID != "jti-housing-00000001" || d.LegalBasis != federation.BasisConsent {
		t.Fatalf("delivery to housing: last record %+v, want allowed on its grant", d)
	}
	got := f.read(t, "housing")
	if len(got) != 1 {
		t.Fatalf("housing received %d events, want 1 (the one after its stream existed)", len(got))
	}
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(got[0].Data(), ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetId() != "newmember-marriage-0003" || ev.GetMarriageRecorded().GetDate().GetYear() != 2026 ||
		ev.GetMarriageRecorded().GetSpouseEid() != "" || ev.GetMarriageRecorded().GetActNumber() != "" {
		t.Fatalf("housing received %v, want event 3 minimised to its date", ev)
	}

	// What housing missed, it replays (its rule allows it), on its consent.
	got2, err := replay()
	if err != nil || got2.GetReplayed() != 3 {
		t.Fatalf("replay for housing: %v, %v (want the 3 marriages since the test began)", got2, err)
	}
	msgs := f.read(t, "housing")
	if len(msgs) != 4 {
		t.Fatalf("housing has %d messages after its replay, want 4", len(msgs))
	}
	ev = &eventsv1.Event{}
	if err := proto.Unmarshal(msgs[2].Data(), ev); err != nil || ev.GetId() != "newmember-marriage-0002" || msgs[2].Headers().Get(events.HeaderReplay) != "true" {
		t.Fatalf("housing's replayed message 2: %v %v, want the event refused while its stream was missing", ev, err)
	}
}
