package events_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/events"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// decisions keeps what the gateway audits, in order (the real audit log is
// exercised by cmd/jisr's end-to-end test; here the records' content).
type decisions struct {
	mu   sync.Mutex
	all  []*decision.Decision
	fail bool
}

func (d *decisions) Append(_ context.Context, x *decision.Decision) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail {
		return errors.New("audit down")
	}
	d.all = append(d.all, x)
	return nil
}

func (d *decisions) list() []*decision.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.all)
}

type fixture struct {
	env   *bustest.Env
	audit *decisions
	ev    *events.Events
}

func start(t *testing.T, opts ...bustest.Option) *fixture {
	t.Helper()
	return startWith(t, bustest.Start(t, opts...), nil)
}

// startWith starts the events service on env, its configuration changed by
// configure (when not nil) once the event streams exist.
func startWith(t *testing.T, env *bustest.Env, configure func(*events.Config)) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := natsstate.InitSpecs(ctx, env.Connect(t, "operator"), natsstate.EventSpecs(env.Fed, 1)); err != nil {
		t.Fatal(err)
	}
	f := &fixture{env: env, audit: &decisions{}}
	gw := env.Connect(t, "gateway")
	if err := natsstate.CheckEventStreams(ctx, mustJS(t, gw), env.Fed); err != nil {
		t.Fatal(err)
	}
	cfg := events.Config{Federation: env.Fed, Keyer: env.Keyer, Conn: gw, Audit: f.audit, Log: env.Log}
	if configure != nil {
		configure(&cfg)
	}
	var err error
	if f.ev, err = events.New(cfg); err != nil {
		t.Fatal(err)
	}
	if err := f.ev.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.ev.Stop(context.Background()) })
	return f
}

func died(id, eid string) *eventsv1.Event {
	return &eventsv1.Event{Id: id, Time: timestamppb.Now(), Eid: eid, Payload: &eventsv1.Event_PersonDied{PersonDied: &eventsv1.PersonDied{
		DateOfDeath: &jisrv1.Date{Year: 2026, Month: 11, Day: 27}, PlaceOfDeath: &jisrv1.Place{Commune: "Fès"}, ActNumber: "D-123",
	}}}
}

// publish sends ev as member on the subject a well-behaved adapter would
// use (subj overrides it).
func (f *fixture) publish(t *testing.T, member string, ev *eventsv1.Event, subj string) (*eventsv1.PublishResponse, error) {
	t.Helper()
	nc := f.env.Connect(t, member)
	if subj == "" {
		var err error
		eid, _ := f.env.Fed.NormaliseEID(ev.GetEid())
		typ := "PersonDied"
		if ev.GetAddressChanged() != nil {
			typ = "AddressChanged"
		}
		subj, err = subject.Event{Publisher: member, Type: typ, CKey: f.env.Keyer.CKey(eid)}.Subject()
		if err != nil {
			t.Fatal(err)
		}
	}
	data, _ := proto.Marshal(ev)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reply, err := bus.Call(ctx, nc, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}})
	if err != nil {
		return nil, err
	}
	out := &eventsv1.PublishResponse{}
	return out, proto.Unmarshal(reply.Data, out)
}

// read returns every message of member's own stream, read as that member.
func (f *fixture) read(t *testing.T, member string) []jetstream.Msg {
	t.Helper()
	js := mustJS(t, f.env.Connect(t, member))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, subject.EventStream(member), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for left := info.NumPending; left > 0; {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
		md, _ := m.Metadata()
		left = md.NumPending
	}
	return out
}

// A death reaches the members whose rule covers deaths (cnss, health),
// minimised to the rule's fields, each delivery audited — and no other
// member (tax has no death rule). Publishing it again delivers nothing
// new.
func TestADeathReachesExactlyTheMembersWithADeathRule(t *testing.T) {
	f := start(t)
	ev := died("death-0000000000000001", "ab123")
	for range 2 { // the second time: a publisher retrying after a lost answer
		got, err := f.publish(t, "civil-registry", ev, "")
		if err != nil {
			t.Fatal(err)
		}
		if got.GetDeliveries() != 2 || got.GetId() != ev.GetId() {
			t.Fatalf("publish: %v", got)
		}
	}
	for _, m := range []string{"cnss", "health"} {
		msgs := f.read(t, m)
		if len(msgs) != 1 {
			t.Fatalf("%s received %d messages, want 1 (dedup by event id)", m, len(msgs))
		}
		got := &eventsv1.Event{}
		if err := proto.Unmarshal(msgs[0].Data(), got); err != nil {
			t.Fatal(err)
		}
		want := &eventsv1.Event{Id: ev.GetId(), Time: ev.GetTime(), Eid: "AB123", Payload: &eventsv1.Event_PersonDied{PersonDied: &eventsv1.PersonDied{DateOfDeath: ev.GetPersonDied().GetDateOfDeath()}}}
		if !proto.Equal(got, want) {
			t.Fatalf("%s received %v, want only the rule's fields %v", m, got, want)
		}
		if msgs[0].Subject() != subject.DeliveryPrefix+"."+m+".civil-registry.PersonDied."+f.env.Keyer.CKey("AB123") {
			t.Fatalf("subject %s", msgs[0].Subject())
		}
	}
	if n := len(f.read(t, "tax")); n != 0 {
		t.Fatalf("tax has no death rule but received %d events", n)
	}
	var delivered []string
	for _, d := range f.audit.list() {
		if !d.Allowed || d.Method != "PersonDied" || d.Service != events.Service || d.CKey != f.env.Keyer.CKey("AB123") || d.LegalBasis != "mandate" || d.Law == "" {
			t.Fatalf("record %+v", d)
		}
		if !slices.Equal(d.Fields, []string{"eid", "id", "person_died.date_of_death.day", "person_died.date_of_death.month", "person_died.date_of_death.year", "time.nanos", "time.seconds"}) &&
			!slices.Contains(d.Fields, "person_died.date_of_death.year") {
			t.Fatalf("released fields %v", d.Fields)
		}
		if slices.Contains(d.Fields, "person_died.act_number") {
			t.Fatalf("released fields %v include what the rule does not name", d.Fields)
		}
		delivered = append(delivered, d.Consumer)
	}
	// One record per delivery: the retry finds the deliveries stored and
	// audits nothing again.
	slices.Sort(delivered)
	if !slices.Equal(delivered, []string{"cnss", "health"}) {
		t.Fatalf("audited deliveries to %v", delivered)
	}
}

// What a publisher may not do is refused, audited, and reaches no one.
func TestRefusedPublications(t *testing.T) {
	f := start(t)
	ck := f.env.Keyer.CKey("AB123")
	for _, c := range []struct {
		name, member, subj string
		ev                 *eventsv1.Event
		code               codes.Code
		reason             string
	}{
		{"tax may not record deaths", "tax", "", died("death-0000000000000002", "AB123"), codes.PermissionDenied, decision.ReasonEventNotAllowed},
		{"ckey of another citizen", "civil-registry", "jisr.e.civil-registry.PersonDied." + f.env.Keyer.CKey("CD456"), died("death-0000000000000003", "AB123"), codes.InvalidArgument, decision.ReasonCKeyMismatch},
		{"type other than the payload's", "civil-registry", "jisr.e.civil-registry.PersonBorn." + ck, died("death-0000000000000004", "AB123"), codes.InvalidArgument, decision.ReasonMalformedPayload},
		{"unknown type", "civil-registry", "jisr.e.civil-registry.PersonVanished." + ck, died("death-0000000000000005", "AB123"), codes.InvalidArgument, decision.ReasonUnknownEventType},
		{"short id", "civil-registry", "", died("short", "AB123"), codes.InvalidArgument, decision.ReasonMalformedPayload},
		{"bad eID", "civil-registry", "jisr.e.civil-registry.PersonDied." + f.env.Keyer.CKey("AB123"), died("death-0000000000000006", "not an eid"), codes.InvalidArgument, decision.ReasonBadEID},
		{"in the future", "civil-registry", "", func() *eventsv1.Event {
			e := died("death-0000000000000007", "AB123")
			e.Time = timestamppb.New(time.Now().Add(time.Hour))
			return e
		}(), codes.InvalidArgument, decision.ReasonMalformedPayload},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.publish(t, c.member, c.ev, c.subj)
			st := status.Convert(err)
			if st.Code() != c.code || decision.ReasonOf(st) != c.reason {
				t.Fatalf("got %v (%s), want %v %s", st.Code(), decision.ReasonOf(st), c.code, c.reason)
			}
		})
	}
	for _, m := range []string{"cnss", "health", "tax"} {
		if n := len(f.read(t, m)); n != 0 {
			t.Fatalf("%s received %d events from refused publications", m, n)
		}
	}
	for _, d := range f.audit.list() {
		if d.Allowed {
			t.Fatalf("a refused publication was audited as allowed: %+v", d)
		}
	}
	if n := len(f.audit.list()); n != 7 {
		t.Fatalf("%d refusals audited, want 7", n)
	}
}

// When the audit log cannot take the record, nothing is delivered and the
// publisher is told to publish again.
func TestNoAuditNoDelivery(t *testing.T) {
	f := start(t)
	f.audit.fail = true
	_, err := f.publish(t, "civil-registry", died("death-0000000000000008", "AB123"), "")
	if st := status.Convert(err); st.Code() != codes.Unavailable || decision.ReasonOf(st) != decision.ReasonAuditUnavailable {
		t.Fatalf("got %v", err)
	}
	for _, m := range []string{"cnss", "health"} {
		if n := len(f.read(t, m)); n != 0 {
			t.Fatalf("%s received an unaudited event", m)
		}
	}
}

// Members never read each other's events, never write a delivery, and
// never publish as another member: NATS refuses each.
func TestMembersCannotReachEachOthersEvents(t *testing.T) {
	f := start(t)
	if _, err := f.publish(t, "civil-registry", died("death-0000000000000009", "AB123"), ""); err != nil {
		t.Fatal(err)
	}
	// A refused JetStream API request goes unanswered: a short wait is enough.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	tax := f.env.Connect(t, "tax")
	js := mustJS(t, tax)
	if _, err := js.OrderedConsumer(ctx, subject.EventStream("cnss"), jetstream.OrderedConsumerConfig{}); err == nil {
		t.Fatal("tax read cnss's event stream")
	}
	if _, err := js.Stream(ctx, subject.EventLogStream); err == nil {
		t.Fatal("tax reached the event log")
	}
	for _, subj := range []string{subject.Deliveries("cnss"), subject.AllEvents(), subject.EventLogPrefix + ".>"} {
		v := bustest.NewViolations()
		nc := f.env.Connect(t, "tax", nats.ErrorHandler(v.Handler))
		if _, err := nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, subj)
	}
	// A forged delivery straight into cnss's stream, a forged event as the
	// civil registry, a forged replay as cnss: all refused by NATS.
	for _, subj := range []string{
		"jisr.ev.cnss.civil-registry.PersonDied." + f.env.Keyer.CKey("AB123"),
		"jisr.e.civil-registry.PersonDied." + f.env.Keyer.CKey("AB123"),
		subject.Replay("cnss"),
	} {
		v := bustest.NewViolations()
		nc := f.env.Connect(t, "tax", nats.ErrorHandler(v.Handler))
		if err := nc.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		v.Wait(t, subj)
	}
	if n := len(f.read(t, "cnss")); n != 1 {
		t.Fatalf("cnss has %d events, want 1", n)
	}
}

// A member whose rule allows replays gets the events since a date again,
// each audited as a replay; a member whose rules do not is refused.
func TestReplay(t *testing.T) {
	f := start(t)
	since := time.Now().Add(-time.Minute)
	for i := range 3 {
		if _, err := f.publish(t, "civil-registry", died(fmt.Sprintf("death-%016d", 100+i), fmt.Sprintf("AB%d", 100+i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	replay := func(member string) (*eventsv1.ReplayResponse, error) {
		data, _ := proto.Marshal(&eventsv1.ReplayRequest{Since: timestamppb.New(since)})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		reply, err := bus.Call(ctx, f.env.Connect(t, member), &nats.Msg{Subject: subject.Replay(member), Data: data, Header: nats.Header{}})
		if err != nil {
			return nil, err
		}
		out := &eventsv1.ReplayResponse{}
		return out, proto.Unmarshal(reply.Data, out)
	}
	got, err := replay("cnss")
	if err != nil || got.GetReplayed() != 3 {
		t.Fatalf("replay for cnss: %v %v", got, err)
	}
	msgs := f.read(t, "cnss")
	if len(msgs) != 6 || msgs[5].Headers().Get(events.HeaderReplay) != "true" {
		t.Fatalf("cnss has %d messages after the replay, want 6", len(msgs))
	}
	replays := 0
	for _, d := range f.audit.list() {
		if d.Reason == decision.ReasonEventReplayed && d.Allowed && d.Consumer == "cnss" {
			replays++
		}
	}
	if replays != 3 {
		t.Fatalf("%d replayed deliveries audited, want 3", replays)
	}
	if _, err := replay("health"); status.Code(err) != codes.PermissionDenied || decision.ReasonOf(status.Convert(err)) != decision.ReasonReplayNotAllowed {
		t.Fatalf("replay for health (no rule allows it): %v", err)
	}
}

func mustJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A delivery under a rule with an access-log delay shows in the citizen's
// access log only after it (the record's visible_at).
func TestDeliveryVisibleAfterTheRulesDelay(t *testing.T) {
	f := start(t)
	ev := &eventsv1.Event{Id: "address-0000000000000001", Time: timestamppb.Now(), Eid: "AB123",
		Payload: &eventsv1.Event_AddressChanged{AddressChanged: &eventsv1.AddressChanged{Street: "12 avenue de France", Place: &jisrv1.Place{Commune: "Rabat"}}}}
	got, err := f.publish(t, "civil-registry", ev, "")
	if err != nil || got.GetDeliveries() != 1 {
		t.Fatalf("publish: %v %v", got, err)
	}
	ds := f.audit.list()
	if len(ds) != 1 || ds[0].Consumer != "tax" || ds[0].VisibleAt.Sub(ds[0].Time) != 720*time.Hour {
		t.Fatalf("records %+v", ds)
	}
	if slices.Contains(ds[0].Fields, "address_changed.street") {
		t.Fatalf("the street was released: %v", ds[0].Fields)
	}
	if n := len(f.read(t, "tax")); n != 1 {
		t.Fatalf("tax has %d events", n)
	}
}

// A publisher over its events_per_second is refused at once, audited.
func TestPublisherRateLimited(t *testing.T) {
	yaml := strings.Replace(string(bustest.FederationYAML()),
		"    limits: {events_per_second: 20000}\n", "    limits: {events_per_second: 1}\n", 1)
	f := start(t, bustest.WithFederation([]byte(yaml)))
	if _, err := f.publish(t, "civil-registry", died("death-0000000000000201", "AB201"), ""); err != nil {
		t.Fatal(err)
	}
	_, err := f.publish(t, "civil-registry", died("death-0000000000000202", "AB202"), "")
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || decision.ReasonOf(st) != decision.ReasonRateLimited {
		t.Fatalf("second event within the second: %v", err)
	}
	if n := len(f.read(t, "cnss")); n != 1 {
		t.Fatalf("cnss has %d events, want 1", n)
	}
}
