// Package events is the gateway's side of life events (docs/events.md): it
// takes each event a member publishes on jisr.e.<publisher>.<type>.<ckey>,
// checks it like a query (the publisher may publish this type, the payload
// is a valid event whose eID hashes to the subject's ckey), and delivers it
// into the stream of every member whose event rule covers it, minimised to
// the rule's fields. It also replays the event log to a member whose rule
// allows replays.
//
// Invariant: a delivery reaches a member's stream only after its audit
// record is durable (one record per delivery, visible in the citizen's
// access log after the rule's delay), and only the rule's fields reach it;
// the publisher's Publish is answered OK only once every delivery is
// durable. Deliveries carry the event's id as Nats-Msg-Id, so a publisher
// that publishes the same event again (after a lost answer) makes no second
// delivery.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/workers"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/minimise"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
)

// Service is the name audit records of deliveries carry as their service
// (their method is the event type): the service a receiving backend
// implements.
const Service = "jisr.events.v1.EventSink"

// ReplayMethod is the method of the audit record of a refused replay request.
const ReplayMethod = "Replay"

// Headers of a delivery message in a member's stream.
const (
	HeaderRule   = "Jisr-Event-Rule"   // the rule under which it was delivered
	HeaderReplay = "Jisr-Event-Replay" // "true" when delivered by a replay
)

// MaxEventBytes bounds one published event (the streams refuse larger).
const MaxEventBytes = bus.MaxEventBytes

// MaxReplay bounds the events one replay request delivers.
const MaxReplay = 1_000_000

// MaxFutureSkew is how far in the future an event's time may be.
const MaxFutureSkew = 5 * time.Minute

// AuditLog makes a decision durable (the gateway's audit log).
type AuditLog interface {
	Append(ctx context.Context, d *decision.Decision) error
}

// Consents reads the citizens' standing consent grants (the consent
// service's state: gateway/consent's Store in a gateway node), for the
// deliveries of event rules whose legal basis is consent.
type Consents interface {
	// Covering returns the token ID (jti) of an active grant of the citizen
	// that covers the delivery, ErrNoConsent when none does, or another
	// error when the consent state is unavailable (then nothing is decided:
	// the publication is refused Unavailable and published again later).
	Covering(ctx context.Context, q ConsentQuery) (jti string, err error)
}

// ConsentQuery is one delivery that rests on the citizen's consent.
type ConsentQuery struct {
	// Federation is the version that decides the event (the one in force
	// when it arrived): the consumer's SPIFFE ID is read from it, so a
	// member a later version added is known.
	Federation *federation.Federation
	CKey       string
	Consumer   string // the member
	EventType  string
	Purpose    string
	Fields     []string // the rule's fields (id, time and eid apart)
	Now        time.Time
}

// ErrNoConsent: the citizen holds no active grant that covers a delivery.
var ErrNoConsent = errors.New("events: no active consent grant covers the delivery")

// Config configures the events service.
type Config struct {
	Federation *federation.Federation
	Keyer      *ckey.Keyer
	// Conn is the gateway's connection: it takes publications (jisr.e.>)
	// and replay requests (jisr.er.*), answers them, and reads the streams.
	Conn *nats.Conn
	// MoreConns are further connections of the gateway's identity (the
	// node's query connections). Publications are taken on each too, in
	// the same queue group, and answered on the one they arrived on. The
	// stores of an event (its log entry and its deliveries) go through one
	// JetStream context per connection, Conn's and theirs, picked by the
	// citizen's ckey: a citizen's events always take the same one, and each
	// context's lock and socket serve a share of the citizens. The service
	// does not close them.
	MoreConns []*nats.Conn
	Audit     AuditLog
	// Consents answers for the rules on consent; nil: their deliveries are
	// refused Unavailable (CONSENT_STATE_UNAVAILABLE), never made.
	Consents Consents
	Log      *slog.Logger
	// MaxInFlight bounds the events decided at once (default 1024); past it
	// a publication is refused at once (GATEWAY_OVERLOADED) and retried by
	// its publisher.
	MaxInFlight int
	// Timeout bounds the handling of one event (default 30s).
	Timeout time.Duration
	Now     func() time.Time
	// TracerProvider receives the spans of publications and deliveries
	// (default: the global provider).
	TracerProvider trace.TracerProvider
}

// Sentinel errors.
var ErrConfig = errors.New("events: invalid configuration")

// Events is the gateway's events service. Create with New, then Start.
type Events struct {
	cfg Config
	log *slog.Logger
	js  jetstream.JetStream // on Conn: stream lookups and replays' reads
	// pubs store events and deliveries: Conn's context, then one per
	// MoreConns, picked by ckey (pubFor).
	pubs []jetstream.JetStream
	sem  chan struct{}
	// workers run the publications and replay requests admitted (work).
	workers  *workers.Pool[received]
	stopOnce sync.Once
	subs     []*bus.Responder
	wg       sync.WaitGroup
	ready    atomic.Bool
	// replaying holds the members whose replay is running (one at a time).
	replaying sync.Map
	// fs is the federation in force and the publishers' fair shares under
	// it: SetFederation replaces it, the next event reads it.
	fs atomic.Pointer[fedState]
	// streams are the members' delivery streams' handles (alreadyDelivered).
	streams sync.Map
	// spanOpts send the bus spans to the configured provider.
	spanOpts []bus.SpanOption

	delivered, refused atomic.Int64
}

// New validates cfg.
func New(cfg Config) (*Events, error) {
	if cfg.Federation == nil || cfg.Keyer == nil || cfg.Conn == nil || cfg.Audit == nil {
		return nil, fmt.Errorf("%w: Federation, Keyer, Conn and Audit are required", ErrConfig)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := CheckFederation(cfg.Federation); err != nil {
		return nil, err
	}
	// Stores are published asynchronously and their acks awaited: no
	// request inbox and timer per store, the acks of a context's events in
	// flight come back on one subscription of its connection.
	var pubs []jetstream.JetStream
	for _, nc := range append([]*nats.Conn{cfg.Conn}, cfg.MoreConns...) {
		if nc == nil {
			return nil, fmt.Errorf("%w: a nil connection in MoreConns", ErrConfig)
		}
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*cfg.MaxInFlight), jetstream.WithPublishAsyncTimeout(cfg.Timeout))
		if err != nil {
			return nil, err
		}
		pubs = append(pubs, js)
	}
	var spanOpts []bus.SpanOption
	if cfg.TracerProvider != nil {
		spanOpts = []bus.SpanOption{bus.WithTracerProvider(cfg.TracerProvider)}
	}
	e := &Events{cfg: cfg, log: cfg.Log.With("component", "gateway-events"), js: pubs[0], pubs: pubs, sem: make(chan struct{}, cfg.MaxInFlight), spanOpts: spanOpts}
	e.workers = workers.New(workerIdle, e.work)
	e.fs.Store(newFedState(cfg.Federation, nil))
	return e, nil
}

// fedState is a federation in force and the publishers' fair shares: each
// member's events_per_second (federation limits), with a burst of as many.
type fedState struct {
	fed   *federation.Federation
	rates map[string]*rate.Limiter
}

// newFedState keeps prev's limiter of a member whose limit did not change.
func newFedState(fed *federation.Federation, prev *fedState) *fedState {
	st := &fedState{fed: fed, rates: map[string]*rate.Limiter{}}
	for _, m := range fed.Members {
		lim := rate.Limit(m.Limits.EventsPerSecond)
		if prev != nil && prev.rates[m.Name] != nil && prev.rates[m.Name].Limit() == lim {
			st.rates[m.Name] = prev.rates[m.Name]
			continue
		}
		st.rates[m.Name] = rate.NewLimiter(lim, max(1, int(m.Limits.EventsPerSecond)))
	}
	return st
}

// CheckFederation reports whether the events service can apply fed: every
// event rule's fields are event field paths.
func CheckFederation(fed *federation.Federation) error {
	for _, r := range fed.EventRules {
		for _, f := range r.Fields {
			if err := checkEventPath(f); err != nil {
				return fmt.Errorf("%w: event rule %s: fields: %v", ErrConfig, r.Name, err)
			}
		}
	}
	return nil
}

// SetFederation puts a new federation version in force for the events
// published from now on (bus/fedwatch): a rule it adds delivers the next
// event it covers, a rule it removes delivers none — an event is decided
// whole under one version. A version it cannot apply is refused and the
// running one stays.
func (e *Events) SetFederation(fed *federation.Federation) error {
	if fed == nil {
		return fmt.Errorf("%w: no federation", ErrConfig)
	}
	if err := CheckFederation(fed); err != nil {
		return err
	}
	e.fs.Store(newFedState(fed, e.fs.Load()))
	e.log.Info("event rules applied", "event_rules", len(fed.EventRules))
	return nil
}

// federation is the federation in force.
func (e *Events) federation() *federation.Federation { return e.fs.Load().fed }

// checkEventPath reports whether a rule's field path names a field of the
// event (person_died.date_of_death).
func checkEventPath(p string) error {
	md := (&eventsv1.Event{}).ProtoReflect().Descriptor()
	var seg string
	for rest := p; rest != ""; {
		seg, rest, _ = cut(rest)
		if md == nil {
			return fmt.Errorf("%q: %s has no fields", p, seg)
		}
		fd := md.Fields().ByName(protoreflect.Name(seg))
		if fd == nil {
			return fmt.Errorf("%q: no field %s in %s", p, seg, md.FullName())
		}
		md = fd.Message()
	}
	return nil
}

// Start subscribes to events, on Conn and each of MoreConns, and to replay
// requests, on Conn, in the gateway's queue group, so that the connections
// and the replicas share them. bus.QueueSubscribe: a planned reconnection
// of a connection (a renewed SVID) first stops its deliveries and lets the
// requests it received be answered, since only it may answer them.
func (e *Events) Start(ctx context.Context) error {
	conns := append([]*nats.Conn{e.cfg.Conn}, e.cfg.MoreConns...)
	type sub struct {
		nc    *nats.Conn
		subj  string
		h     func(*nats.Msg)
		count bool
	}
	// A replay can run for minutes: counted in, it would hold up every
	// planned reconnection of Conn for the whole drain and be cut anyway.
	subs := []sub{{e.cfg.Conn, subject.AllReplays(), e.handleReplay, false}}
	for _, nc := range conns {
		subs = append(subs, sub{nc, subject.AllEvents(), e.handlePublish, true})
	}
	// The pending limits are shared out among the connections: together
	// they hold no more than one connection did.
	pendMsgs, pendBytes := max(1<<16/len(conns), 1024), max(64<<20/len(conns), 4<<20)
	for _, s := range subs {
		r, err := bus.QueueSubscribe(s.nc, s.subj, subject.GatewayQueue, e.dispatch(s.nc, s.h, s.count), pendMsgs, pendBytes)
		if err != nil {
			e.unsubscribe()
			return fmt.Errorf("events: subscribe %s: %w", s.subj, err)
		}
		e.subs = append(e.subs, r)
	}
	for _, nc := range conns {
		if err := bus.Flush(ctx, nc); err != nil {
			e.unsubscribe()
			return fmt.Errorf("events: subscribe: %w", err)
		}
	}
	e.ready.Store(true)
	e.log.Info("events ready", "subject", subject.AllEvents(), "replays", subject.AllReplays(), "conns", len(conns))
	return nil
}

// unsubscribe ends every subscription of Start.
func (e *Events) unsubscribe() {
	for _, s := range e.subs {
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			e.log.Warn("unsubscribe", "err", err)
		}
	}
	e.subs = nil
}

// Ready reports whether the service takes events.
func (e *Events) Ready() error {
	if !e.ready.Load() {
		return errors.New("events: not subscribed")
	}
	return nil
}

// Stop stops taking events, on every connection, and waits, until ctx
// ends, for those in flight.
func (e *Events) Stop(ctx context.Context) error {
	e.ready.Store(false)
	e.unsubscribe()
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		e.stopOnce.Do(e.workers.Close)
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("events: still in flight: %w", ctx.Err())
	}
}

// Counts returns the deliveries stored (a publication again of a stored
// event is not counted) and the publications refused so far.
func (e *Events) Counts() (delivered, refused int64) { return e.delivered.Load(), e.refused.Load() }

// dispatch hands each request nc receives to a worker to run h, or refuses
// it at once when the service is at capacity: the subscription's goroutine
// never blocks. With count, the request is counted in on nc until
// answered (bus.Serving): a planned reconnection of nc waits for the
// answer, which only nc may send (a reply leaves on the connection its
// request came in on: nats.Msg.Respond).
func (e *Events) dispatch(nc *nats.Conn, h func(*nats.Msg), count bool) nats.MsgHandler {
	return func(msg *nats.Msg) {
		done := func() {}
		if count {
			done = bus.Serving(nc)
		}
		select {
		case e.sem <- struct{}{}:
		default:
			e.refused.Add(1)
			e.answerTo(msg, nil, decision.Refuse(codes.ResourceExhausted, decision.ReasonOverloaded, "the gateway is at capacity: publish again later"))
			done()
			return
		}
		e.wg.Add(1)
		e.workers.Go(received{msg: msg, h: h, done: done}) // never waits for a worker
	}
}

// received is a request admitted: a publication or a replay request.
type received struct {
	msg  *nats.Msg
	h    func(*nats.Msg)
	done func() // ends its count on the connection it came on
}

// workerIdle is how long a worker waits for another request before it ends.
const workerIdle = 2 * time.Second

// work runs r on a worker of e.workers: one that has handled an event
// before has grown its stack already through the checks, the audit and the
// stores (a fresh goroutine grows it anew, copying it, on every event).
func (e *Events) work(r received) {
	r.h(r.msg)
	r.done()
	<-e.sem
	e.wg.Done()
}

// answerTo answers msg on its sender's own inbox only (the first token after
// the prefix is the member NATS vouches for).
func (e *Events) answerTo(msg *nats.Msg, payload []byte, err error) {
	if bus.ReplyTo(msg, senderOf(msg.Subject)) != nil {
		return
	}
	var st *status.Status
	if err != nil {
		st = status.Convert(err)
	}
	if rerr := bus.Respond(msg, payload, st); rerr != nil {
		e.log.Warn("answer not sent", "err", rerr)
	}
}

// senderOf is the member token of jisr.e.<member>.… or jisr.er.<member>.
func senderOf(subj string) string {
	for _, p := range []string{subject.EventPrefix + ".", subject.ReplayPrefix + "."} {
		if len(subj) > len(p) && subj[:len(p)] == p {
			m, _, _ := cut(subj[len(p):])
			return m
		}
	}
	return ""
}

// handlePublish decides one published event.
func (e *Events) handlePublish(msg *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.Timeout)
	defer cancel()
	// As for queries: the publication's span is the root of a trace of the
	// gateway's own (the trace id in the audit records is one no member
	// picked), linked to the publisher's span; each delivery carries it to
	// the consumer's adapter in its traceparent header.
	ctx, span := e.startSpan(ctx, msg)
	var err error
	defer func() { bus.EndSpan(span, err) }()
	publisher := senderOf(msg.Subject)
	if bus.ReplyTo(msg, publisher) != nil {
		e.refused.Add(1)
		e.audit(ctx, &decision.Decision{Provider: e.member(publisher), Service: Service, Code: codes.PermissionDenied, Reason: decision.ReasonBadReplySubject, TraceID: traceID(ctx)})
		e.log.Warn("event dropped unanswered: its reply subject is not the publisher's inbox", "publisher", e.member(publisher))
		return
	}
	var n *eventsv1.PublishResponse
	n, err = e.publish(ctx, msg)
	if err != nil {
		e.refused.Add(1)
		e.answerTo(msg, nil, err)
		return
	}
	b, _ := proto.Marshal(n)
	e.answerTo(msg, b, nil)
}

func (e *Events) member(name string) string {
	if _, err := e.federation().Member(name); err != nil {
		return ""
	}
	return name
}

// publish checks the event, stores it in the event log, and delivers it
// under every rule that covers it. A refusal is audited.
func (e *Events) publish(ctx context.Context, msg *nats.Msg) (*eventsv1.PublishResponse, error) {
	now := e.cfg.Now().UTC()
	d := &decision.Decision{Time: now, Service: Service, TraceID: traceID(ctx)}
	refuse := func(r *decision.Refusal) (*eventsv1.PublishResponse, error) {
		d.Code, d.Reason = r.Code, r.Reason
		if err := e.audit(ctx, d); err != nil {
			return nil, err
		}
		return nil, r
	}
	s, err := subject.ParseEvent(msg.Subject)
	if err != nil {
		d.Provider = e.member(senderOf(msg.Subject))
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonBadSubject, "malformed event subject"))
	}
	fs := e.fs.Load() // one version decides the whole event
	pub, err := fs.fed.Member(s.Publisher)
	if err != nil {
		return refuse(decision.Refuse(codes.PermissionDenied, decision.ReasonUnknownMember, "unknown publisher member"))
	}
	d.Provider = pub.Name
	if !fs.rates[pub.Name].Allow() {
		return refuse(decision.Refuse(codes.ResourceExhausted, decision.ReasonRateLimited, "%s publishes more than its %v events a second", pub.Name, pub.Limits.EventsPerSecond))
	}
	field := federation.EventField(s.Type)
	if field == nil {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonUnknownEventType, "unknown event type"))
	}
	d.Method = s.Type
	if !pub.PublishesEvent(s.Type) {
		return refuse(decision.Refuse(codes.PermissionDenied, decision.ReasonEventNotAllowed, "%s may not publish %s events", pub.Name, s.Type))
	}
	if len(msg.Data) > MaxEventBytes {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonRequestTooLarge, "an event is at most %d bytes", MaxEventBytes))
	}
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(msg.Data, ev); err != nil {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the payload is not a valid jisr.events.v1.Event"))
	}
	minimise.DropUnknown(ev.ProtoReflect())
	if err := CheckID(ev.GetId()); err != nil {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the event id must be 16 to 64 characters of [A-Za-z0-9_-]"))
	}
	if ev.GetTime().CheckValid() != nil || ev.GetTime().AsTime().After(now.Add(MaxFutureSkew)) {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the event needs a valid time, not in the future"))
	}
	if ev.ProtoReflect().WhichOneof(field.ContainingOneof()) != field {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the payload is not a %s event", s.Type))
	}
	eid, err := fs.fed.NormaliseEID(ev.GetEid())
	if err != nil {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonBadEID, "the eID does not match the federation's eID format"))
	}
	ck := e.cfg.Keyer.CKey(eid)
	d.CKey = ck
	if !ckey.Equal(ck, s.CKey) {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonCKeyMismatch, "the subject's citizen key does not match the event's eID"))
	}
	ev.Eid = eid
	s.CKey = ck
	bus.SetSpanSubject(trace.SpanFromContext(ctx), msg.Subject) // checked: no eID in it
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return refuse(decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the event could not be encoded"))
	}
	// The event log keeps the event as published, for replays.
	logSubj, _ := s.LogSubject()
	js := e.pubFor(s.CKey) // the citizen's context: log entry and deliveries
	logAck, err := e.store(ctx, js, &nats.Msg{Subject: logSubj, Data: data},
		jetstream.WithMsgID(pub.Name+"."+ev.GetId()), jetstream.WithExpectStream(subject.EventLogStream))
	if err != nil {
		e.log.Error("event log refused the event", "publisher", pub.Name, "type", s.Type, "err", err)
		return nil, decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event could not be stored; publish it again")
	}
	rules := fs.fed.EventRulesFor(pub.Name, s.Type)
	// Rules on consent are decided first, all of them, so that a consent
	// state that cannot be read refuses the publication before anything is
	// delivered: the publisher publishes it again (same id) later.
	// A publication again of a stored event (the publisher lost the
	// answer): a delivery already in the consumer's stream is neither
	// audited nor decided again — one audit record per (event, consumer).
	// A consumer whose stream the operator has not created yet (a member a
	// new version added, before `jisr nats init`) gets no delivery: an
	// audited EVENT_STREAM_MISSING, the other consumers' deliveries go on.
	done := make([]bool, len(rules))
	missing := make([]bool, len(rules))
	for i, r := range rules {
		switch _, err := e.stream(ctx, r.Consumer); {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing[i] = true
			if err := e.streamMissing(ctx, s, r, now); err != nil {
				return nil, err
			}
		case err != nil:
			e.log.Error("event stream unreadable", "consumer", r.Consumer, "err", err)
			return nil, decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event could not be delivered; publish it again")
		case logAck.Duplicate:
			done[i] = e.alreadyDelivered(ctx, s, r.Consumer, pub.Name+"."+ev.GetId())
		}
	}
	grants := make([]string, len(rules))
	for i, r := range rules {
		if done[i] || missing[i] || r.LegalBasis != federation.BasisConsent {
			continue
		}
		jti, err := e.consentFor(ctx, fs.fed, s, r, now)
		if err != nil {
			return nil, err
		}
		grants[i] = jti
	}
	n := int32(0)
	var ds []*delivery
	for i, r := range rules {
		if done[i] {
			n++
			continue
		}
		if missing[i] {
			continue // refused and audited by streamMissing
		}
		if r.LegalBasis == federation.BasisConsent && grants[i] == "" {
			continue // refused and audited by consentFor
		}
		d, err := e.prepare(ctx, s, ev, r, grants[i], false, now)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	if err := e.deliverAll(ctx, js, ds); err != nil {
		return nil, err
	}
	return &eventsv1.PublishResponse{Id: ev.GetId(), Deliveries: n + int32(len(ds))}, nil
}

// delivery is one delivery decided: its audit record and its message.
type delivery struct {
	d     *decision.Decision
	m     *nats.Msg
	msgID string
	rule  *federation.EventRule
}

// deliverAll audits every delivery of one event — at once, so that they
// share the audit log's group commit — and only once all are durable
// stores them in the consumers' streams, all at once, then waits for every
// store's ack. js is the citizen's context (pubFor).
func (e *Events) deliverAll(ctx context.Context, js jetstream.JetStream, ds []*delivery) error {
	switch len(ds) {
	case 0:
		return nil
	case 1:
		if err := e.audit(ctx, ds[0].d); err != nil {
			return err
		}
	default:
		errs := make([]error, len(ds))
		var wg sync.WaitGroup
		for i, d := range ds {
			wg.Go(func() { errs[i] = e.audit(ctx, d.d) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
	}
	futs := make([]jetstream.PubAckFuture, len(ds))
	for i, d := range ds {
		f, err := js.PublishMsgAsync(d.m, jetstream.WithMsgID(d.msgID), jetstream.WithExpectStream(subject.EventStream(d.rule.Consumer)))
		if err != nil {
			e.log.Error("event stream refused a delivery", "consumer", d.rule.Consumer, "err", err)
			return decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event could not be delivered; publish it again")
		}
		futs[i] = f
	}
	for i, f := range futs {
		ack, err := awaitAck(ctx, f)
		if err != nil {
			e.log.Error("event stream refused a delivery", "consumer", ds[i].rule.Consumer, "err", err)
			return decision.Refuse(codes.Unavailable, decision.ReasonEventStoreUnavailable, "the event could not be delivered; publish it again")
		}
		if !ack.Duplicate {
			e.delivered.Add(1)
		}
	}
	return nil
}

// store publishes m to a stream through js and waits for its ack.
func (e *Events) store(ctx context.Context, js jetstream.JetStream, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	f, err := js.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, err
	}
	return awaitAck(ctx, f)
}

// pubFor is the context that stores the events of the citizen ck (FNV-1a
// of the ckey): always the same one, so that a citizen's stores, issued in
// order, leave on one connection in that order (order across replicas, or
// after a publisher gave up waiting, is the publisher's: docs/events.md),
// and the citizens spread over the connections.
func (e *Events) pubFor(ck string) jetstream.JetStream {
	if len(e.pubs) == 1 {
		return e.pubs[0]
	}
	h := uint32(2166136261)
	for i := 0; i < len(ck); i++ {
		h ^= uint32(ck[i])
		h *= 16777619
	}
	return e.pubs[h%uint32(len(e.pubs))]
}

func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// alreadyDelivered reports whether the last delivery on the citizen's
// delivery subject in consumer's stream (one publisher, one type, one
// citizen) is the one whose Nats-Msg-Id is msgID: a publisher that retries
// after a lost answer, before it publishes the next event of that type
// about that citizen, finds its delivery there. Otherwise (an older
// delivery, a replay since, an error) it answers false: the delivery is
// audited again and the stream drops the copy within its dedup window —
// over-recording is the safe side. One read, not a scan: a scan of a
// citizen's deliveries would cost a round trip per delivery.
func (e *Events) alreadyDelivered(ctx context.Context, s subject.Event, consumer, msgID string) bool {
	s.Consumer = consumer
	subj, err := s.DeliverySubject()
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := e.stream(ctx, consumer)
	if err != nil {
		return false
	}
	m, err := st.GetLastMsgForSubject(ctx, subj)
	return err == nil && m.Header.Get(nats.MsgIdHdr) == msgID
}

// stream is the handle of consumer's delivery stream, looked up once it
// exists (a handle reads the stream by name); jetstream.ErrStreamNotFound
// while the operator has not created it — looked up again at each event
// until then, so a stream created later receives the next events. The
// gateway never creates one (gateway/natsstate: only the operator does).
func (e *Events) stream(ctx context.Context, consumer string) (jetstream.Stream, error) {
	if v, ok := e.streams.Load(consumer); ok {
		return v.(jetstream.Stream), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, subject.EventStream(consumer))
	if err != nil {
		return nil, err
	}
	e.streams.Store(consumer, st)
	return st, nil
}

// streamMissing audits the refusal of a delivery under rule r whose
// consumer has no stream yet (EVENT_STREAM_MISSING): the event is not
// delivered to it, now or later (a rule with replay: true lets the member
// replay it once its stream exists).
func (e *Events) streamMissing(ctx context.Context, s subject.Event, r *federation.EventRule, now time.Time) error {
	e.log.Error("a member's event stream is missing: its delivery is refused; run `jisr nats init` with the federation in force",
		"consumer", r.Consumer, "stream", subject.EventStream(r.Consumer), "type", s.Type, "rule", r.Name)
	return e.audit(ctx, &decision.Decision{
		Time: now, Consumer: r.Consumer, Provider: s.Publisher, Service: Service, Method: s.Type,
		CKey: s.CKey, Purpose: r.Purpose, LegalBasis: r.LegalBasis, Law: r.Law, Rule: r.Name, VisibleAt: now,
		Code: codes.FailedPrecondition, Reason: decision.ReasonEventStreamMissing, TraceID: traceID(ctx),
	})
}

// consentFor looks up the citizen's grant for a delivery under rule r of
// fed (the version that decides the event), which rests on consent: the
// grant's jti, or "" with the refusal audited
// (CONSENT_REQUIRED) when the citizen holds none, or an error (audited
// CONSENT_STATE_UNAVAILABLE, or the audit's) when the consent state cannot
// be read: the publisher is refused Unavailable and publishes again.
func (e *Events) consentFor(ctx context.Context, fed *federation.Federation, s subject.Event, r *federation.EventRule, now time.Time) (string, error) {
	d := &decision.Decision{
		Time: now, Consumer: r.Consumer, Provider: s.Publisher, Service: Service, Method: s.Type,
		CKey: s.CKey, Purpose: r.Purpose, LegalBasis: r.LegalBasis, Rule: r.Name, VisibleAt: now,
		TraceID: traceID(ctx),
	}
	var (
		jti string
		err = errors.New("events: no consent state configured")
	)
	if e.cfg.Consents != nil {
		jti, err = e.cfg.Consents.Covering(ctx, ConsentQuery{
			Federation: fed, CKey: s.CKey, Consumer: r.Consumer, EventType: s.Type, Purpose: r.Purpose, Fields: r.Fields, Now: now,
		})
	}
	switch {
	case err == nil && jti != "":
		return jti, nil
	case err == nil || errors.Is(err, ErrNoConsent):
		d.Code, d.Reason = codes.PermissionDenied, decision.ReasonConsentRequired
		return "", e.audit(ctx, d)
	}
	e.log.Error("consent state unavailable: the event is refused, to be published again", "consumer", r.Consumer, "type", s.Type, "err", err)
	d.Code, d.Reason = codes.Unavailable, decision.ReasonConsentStateUnavailable
	if aerr := e.audit(ctx, d); aerr != nil {
		return "", aerr
	}
	return "", decision.Refuse(codes.Unavailable, decision.ReasonConsentStateUnavailable,
		"the consent state is unavailable, so the event was not delivered; publish it again later")
}

// deliver audits one delivery of ev under rule r, then stores it, minimised,
// in the consumer's stream.
func (e *Events) deliver(ctx context.Context, s subject.Event, ev *eventsv1.Event, r *federation.EventRule, jti string, replay bool, now time.Time) error {
	d, err := e.prepare(ctx, s, ev, r, jti, replay, now)
	if err != nil {
		return err
	}
	return e.deliverAll(ctx, e.pubFor(s.CKey), []*delivery{d})
}

// prepare decides one delivery of ev under rule r: the copy minimised to
// the rule's fields, its audit record and its message.
func (e *Events) prepare(ctx context.Context, s subject.Event, ev *eventsv1.Event, r *federation.EventRule, jti string, replay bool, now time.Time) (*delivery, error) {
	out := proto.Clone(ev).(*eventsv1.Event)
	if len(r.Fields) > 0 {
		minimise.Trim(out.ProtoReflect(), append([]string{"id", "time", "eid"}, r.Fields...))
	}
	minimise.ClearNamedOnly(out.ProtoReflect(), r.Fields)
	minimise.CanonicalNaN(out.ProtoReflect())
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
	if err != nil {
		return nil, decision.Refuse(codes.Internal, decision.ReasonMinimisation, "the event could not be minimised")
	}
	sent := &eventsv1.Event{}
	if err := proto.Unmarshal(data, sent); err != nil {
		return nil, decision.Refuse(codes.Internal, decision.ReasonMinimisation, "the event could not be minimised")
	}
	d := &decision.Decision{
		Time: now, Consumer: r.Consumer, Provider: s.Publisher, Service: Service, Method: s.Type,
		CKey: s.CKey, Purpose: r.Purpose, LegalBasis: r.LegalBasis, Law: r.Law, Rule: r.Name,
		Allowed: true, Reason: decision.ReasonAllowed, Code: codes.OK,
		Fields: minimise.Released(sent.ProtoReflect()), VisibleAt: now.Add(r.LogDelay),
		TokenID: jti, TraceID: traceID(ctx),
	}
	msgID := s.Publisher + "." + ev.GetId()
	if replay {
		// A replay delivers again on purpose (the receiver dedups by event
		// id), so its id is not the first delivery's.
		d.Reason = decision.ReasonEventReplayed
		msgID = "replay." + now.Format("20060102T150405.000000000") + "." + msgID
	}
	s.Consumer = r.Consumer
	subj, err := s.DeliverySubject()
	if err != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadSubject, "malformed event subject")
	}
	m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
	m.Header.Set(HeaderRule, r.Name)
	bus.InjectTrace(ctx, m.Header)
	if replay {
		m.Header.Set(HeaderReplay, "true")
	}
	return &delivery{d: d, m: m, msgID: msgID, rule: r}, nil
}

// audit appends d; an error is the refusal the publisher gets (nothing was
// delivered after it).
func (e *Events) audit(ctx context.Context, d *decision.Decision) error {
	if d.Time.IsZero() {
		d.Time = e.cfg.Now().UTC()
	}
	if d.VisibleAt.IsZero() {
		d.VisibleAt = d.Time
	}
	if err := e.cfg.Audit.Append(context.WithoutCancel(ctx), d); err != nil {
		e.log.Error("audit append failed: nothing delivered", "err", err)
		return decision.Refuse(codes.Unavailable, decision.ReasonAuditUnavailable,
			"the audit log is unavailable, so nothing was delivered; publish again later")
	}
	return nil
}

// CheckID checks an event id: 16 to 64 characters of [A-Za-z0-9_-].
func CheckID(id string) error {
	if len(id) < 16 || len(id) > 64 {
		return errors.New("events: an id is 16 to 64 characters")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return errors.New("events: an id is made of [A-Za-z0-9_-]")
		}
	}
	return nil
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// traceID is the trace of ctx, for the audit record (empty without one).
func traceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// startSpan starts the server span of a received publication or replay
// request, linked to the sender's span when it sent one.
func (e *Events) startSpan(ctx context.Context, msg *nats.Msg) (context.Context, trace.Span) {
	ctx, span := bus.StartUnverifiedSpan(ctx, "process", msg.Subject, trace.SpanKindServer, len(msg.Data), e.spanOpts...)
	if span.IsRecording() {
		if caller := trace.SpanContextFromContext(bus.ExtractTrace(context.Background(), msg.Header)); caller.IsValid() {
			span.AddLink(trace.Link{SpanContext: caller})
		}
	}
	return ctx, span
}
