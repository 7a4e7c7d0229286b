package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/workers"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/minimise"
	"github.com/jisr-bus/jisr/gateway/policy"
	"github.com/jisr-bus/jisr/gateway/quota"
)

// ConsentVerifier checks the consent token of a query whose rule needs one.
// It returns a *decision.Refusal (Unauthenticated or PermissionDenied) when
// the token does not allow the query.
type ConsentVerifier interface {
	Verify(ctx context.Context, req *decision.Request) (*decision.Grant, error)
}

// AuditLog makes a decision durable. Append returns only once the record is
// stored; an error means it is not, and the gateway then releases nothing.
type AuditLog interface {
	Append(ctx context.Context, d *decision.Decision) error
}

// Safeguards lists checks that can be switched off for the benchmark report
// only (`jisr bench` measures what each costs). Production never sets them.
type Safeguards struct {
	SkipConsent, SkipAudit, SkipMinimise bool
}

// Config is the gateway's configuration, validated once by New.
type Config struct {
	Federation *federation.Federation
	Keyer      *ckey.Keyer
	Conn       *nats.Conn
	// QueryConns are further connections of the gateway's identity on
	// which it also takes queries, in the same queue group. A query is
	// forwarded and answered on the connection it arrived on, so that
	// several connections spread the TLS, parsing and socket writes — each
	// connection serialises its own — over the cores. The gateway does not
	// close them.
	QueryConns []*nats.Conn
	Consent    ConsentVerifier
	Audit      AuditLog
	// Requests, when set, answers consumers' consent requests (queries whose
	// provider is subject.ConsentProvider); without it they are refused.
	Requests   ConsentRequests
	Log        *slog.Logger
	Registerer prometheus.Registerer // metrics; nil = not registered
	// Services are descriptors of services given besides the federation's
	// descriptor sets (default none: every ministry's services come from
	// its descriptor set; jisr links no ministry's schema).
	Services []protoreflect.ServiceDescriptor
	// DescriptorSets hold the content of the descriptor sets the federation
	// file names (descriptor_sets), by file name: the services of every
	// member (bus/descset). Default: Federation.Descriptors (read beside
	// the federation file by federation.Load). A new version brings its own.
	DescriptorSets map[string][]byte
	// MaxInFlight bounds the queries decided at once, all members together
	// (default 4096); a query over it is refused at once (GATEWAY_OVERLOADED).
	// Each member is also bounded by its federation limits.
	MaxInFlight int
	// PendingMessages and PendingBytes bound the queries received and not
	// yet dispatched (defaults 65536 and 64 MiB). Dispatch only admits or
	// refuses, so they stay near empty; past them the NATS client drops
	// messages rather than the server cutting the gateway off.
	PendingMessages, PendingBytes int
	// RefusalQueue bounds the records of queries refused at dispatch that
	// wait for the audit log (default 8192).
	RefusalQueue int
	// MaxTimeout caps a caller's deadline (default 30s); DefaultTimeout
	// applies to a caller without one.
	MaxTimeout     time.Duration
	DefaultTimeout time.Duration
	Unsafe         Safeguards
	// Instance names this replica in the Jisr-Gateway header of its replies.
	Instance string
}

type options struct {
	tp trace.TracerProvider
}

// Option configures New with an optional setting.
type Option func(*options)

// WithTracerProvider sends the gateway's spans to tp (default: the global
// provider, otel.GetTracerProvider(), as it is when New is called).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tp = tp }
}

// Sentinel errors of New.
var ErrConfig = errors.New("gateway: invalid configuration")

// Gateway decides queries. Create with New, then Start.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	fs       atomic.Pointer[fedState] // the federation version in force
	metrics  *metrics
	quota    *quota.Limiter // predicate queries per rule and citizen
	backends *backendWatch  // the backends answering for each provider

	sem      chan struct{} // one slot per query being decided
	refusals chan *decision.Decision
	quit     chan struct{}
	workers  *workers.Pool[admitted] // decide the admitted queries (work)
	stopOnce sync.Once
	auditors sync.WaitGroup
	wg       sync.WaitGroup
	sub      *bus.Responder
	subs     []*bus.Responder // on QueryConns
	ready    atomic.Bool

	tracer   trace.Tracer
	spanOpts []bus.SpanOption // the bus spans go to the gateway's provider
}

// refusalAuditors is how many appends of early refusals run at once.
const refusalAuditors = 16

// New validates cfg and builds a gateway.
func New(cfg Config, opts ...Option) (*Gateway, error) {
	switch {
	case cfg.Federation == nil:
		return nil, fmt.Errorf("%w: Federation is required", ErrConfig)
	case cfg.Keyer == nil:
		return nil, fmt.Errorf("%w: Keyer is required", ErrConfig)
	case cfg.Conn == nil:
		return nil, fmt.Errorf("%w: Conn is required", ErrConfig)
	case cfg.Consent == nil && !cfg.Unsafe.SkipConsent:
		return nil, fmt.Errorf("%w: Consent is required", ErrConfig)
	case cfg.Audit == nil && !cfg.Unsafe.SkipAudit:
		return nil, fmt.Errorf("%w: Audit is required", ErrConfig)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4096
	}
	if cfg.PendingMessages <= 0 {
		cfg.PendingMessages = 1 << 16
	}
	if cfg.PendingBytes <= 0 {
		cfg.PendingBytes = 64 << 20
	}
	if cfg.RefusalQueue <= 0 {
		cfg.RefusalQueue = 8192
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = 30 * time.Second
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = bus.DefaultTimeout
	}
	if cfg.DescriptorSets == nil {
		cfg.DescriptorSets = cfg.Federation.Descriptors
	}
	svcs, err := descset.Services(cfg.Federation, cfg.DescriptorSets, cfg.Services)
	if err != nil {
		return nil, err
	}
	cat, err := catalog.New(cfg.Federation, svcs)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.tp == nil {
		o.tp = otel.GetTracerProvider()
	}
	g := &Gateway{
		tracer: o.tp.Tracer(tracerScope), spanOpts: []bus.SpanOption{bus.WithTracerProvider(o.tp)},
		cfg: cfg, log: cfg.Log.With("component", "gateway"),
		metrics: m, quota: quota.New(0), sem: make(chan struct{}, cfg.MaxInFlight),
		refusals: make(chan *decision.Decision, cfg.RefusalQueue), quit: make(chan struct{}),
	}
	g.workers = workers.New(workerIdle, g.work)
	if g.backends, err = newBackendWatch(g.log, cfg.Registerer); err != nil {
		return nil, err
	}
	g.fs.Store(&fedState{fed: cfg.Federation, cat: cat, pol: policy.New(cfg.Federation), shares: newShares(cfg.Federation)})
	if u := cfg.Unsafe; u.SkipAudit || u.SkipConsent || u.SkipMinimise {
		g.log.Warn("SAFEGUARDS SWITCHED OFF — benchmark mode, never use in production",
			"skip_consent", u.SkipConsent, "skip_audit", u.SkipAudit, "skip_minimise", u.SkipMinimise)
	}
	return g, nil
}

// Start subscribes to every query subject in the gateway queue group, so
// several replicas share the load.
func (g *Gateway) Start(ctx context.Context) error {
	// bus.QueueSubscribe: a reconnection with a renewed SVID stops the
	// deliveries first, so that no query is lost in the closed connection.
	sub, err := bus.QueueSubscribe(g.cfg.Conn, subject.AllQueries(), subject.GatewayQueue, g.dispatch, g.cfg.PendingMessages, g.cfg.PendingBytes)
	if err != nil {
		return fmt.Errorf("gateway: subscribe: %w", err)
	}
	if err := bus.Flush(ctx, g.cfg.Conn); err != nil {
		return fmt.Errorf("gateway: subscribe: %w", err)
	}
	for _, nc := range g.cfg.QueryConns {
		s, err := bus.QueueSubscribe(nc, subject.AllQueries(), subject.GatewayQueue, func(msg *nats.Msg) { g.dispatchOn(nc, msg) }, g.cfg.PendingMessages, g.cfg.PendingBytes)
		if err == nil {
			err = bus.Flush(ctx, nc)
		}
		if err != nil {
			_ = sub.Unsubscribe()
			for _, s := range g.subs {
				_ = s.Unsubscribe()
			}
			return fmt.Errorf("gateway: subscribe: %w", err)
		}
		g.subs = append(g.subs, s)
	}
	if err := g.metrics.watch(g.cfg.Registerer, sub); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if !g.cfg.Unsafe.SkipAudit {
		for range refusalAuditors {
			g.auditors.Add(1)
			go g.auditRefusals()
		}
	}
	g.sub = sub
	g.ready.Store(true)
	g.log.Info("gateway ready", "subject", subject.AllQueries(), "queue", subject.GatewayQueue)
	return nil
}

// Ready reports whether the gateway is subscribed and connected.
func (g *Gateway) Ready() error {
	if !g.ready.Load() {
		return errors.New("not subscribed")
	}
	if !g.cfg.Conn.IsConnected() {
		return errors.New("not connected to NATS")
	}
	// The consent state (revocation watch) must be current too, when the
	// verifier can tell.
	if r, ok := g.cfg.Consent.(interface{ Ready() error }); ok && !g.cfg.Unsafe.SkipConsent {
		if err := r.Ready(); err != nil {
			return fmt.Errorf("consent: %w", err)
		}
	}
	return nil
}

// Stop stops taking queries and waits, until ctx ends, for those in flight.
func (g *Gateway) Stop(ctx context.Context) error {
	g.ready.Store(false)
	for _, s := range g.subs {
		if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			g.log.Warn("unsubscribe", "err", err)
		}
	}
	if g.sub != nil {
		if err := g.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			g.log.Warn("unsubscribe", "err", err)
		}
	}
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		g.stopOnce.Do(func() { close(g.quit); g.workers.Close() }) // the refusal auditors write what is queued, then end
		g.auditors.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gateway: queries still in flight: %w", ctx.Err())
	}
}

// Catalog exposes the gateway's method catalog (for the HTTP consoles).
func (g *Gateway) Catalog() *catalog.Catalog { return g.fs.Load().cat }

// dispatch runs on the subscription's delivery goroutine: it must never
// block, or messages pile up in front of it. It admits the query to its own
// goroutine or refuses it at once (see fairshare.go).
func (g *Gateway) dispatch(msg *nats.Msg) { g.dispatchOn(g.cfg.Conn, msg) }

// dispatchOn is dispatch for a query that arrived on nc.
func (g *Gateway) dispatchOn(nc *nats.Conn, msg *nats.Msg) {
	sh := g.fs.Load().shares[consumerToken(msg.Subject)]
	if r := g.admit(sh, msg); r != nil {
		g.refuseEarly(msg, r)
		return
	}
	g.wg.Add(1)
	g.workers.Go(admitted{nc: nc, msg: msg, sh: sh}) // never waits for a worker
}

// admitted is a query admitted to be decided.
type admitted struct {
	nc  *nats.Conn
	msg *nats.Msg
	sh  *share
}

// workerIdle is how long a worker waits for another query before it ends.
const workerIdle = 2 * time.Second

// work decides q on a worker of g.workers: one that has decided a query
// before has grown its stack already through the checks, the spans and the
// NATS calls (a fresh goroutine grows it anew, copying it, twice or more).
func (g *Gateway) work(q admitted) {
	g.handle(q.nc, q.msg)
	g.release(q.sh)
	g.wg.Done()
}

// connKey carries, in a query's context, the connection it arrived on.
type connKey struct{}

// conn is the connection the query of ctx arrived on (the main one by default).
func (g *Gateway) conn(ctx context.Context) *nats.Conn {
	if nc, ok := ctx.Value(connKey{}).(*nats.Conn); ok {
		return nc
	}
	return g.cfg.Conn
}

// handle decides one query that arrived on nc, audits the decision, and answers.
func (g *Gateway) handle(nc *nats.Conn, msg *nats.Msg) {
	start := time.Now()
	timeout := bus.Timeout(msg.Header, g.cfg.DefaultTimeout, g.cfg.MaxTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	if nc != g.cfg.Conn {
		ctx = context.WithValue(ctx, connKey{}, nc)
	}
	defer cancel()
	// The consumer chose the subject's tokens: the span records it only once
	// decide has checked them. It also chose its trace context, so the query
	// span is the root of a trace of the gateway's own, linked to the
	// caller's span: the trace id in the audit record is one no member picked.
	// Its attributes are recorded at the end, all at once (setQueryAttrs).
	ctx, span := bus.StartBareSpan(ctx, "process", msg.Subject, trace.SpanKindServer, g.spanOpts...)
	defer span.End()
	if span.IsRecording() { // the hot path reads no trace header when nothing records
		if caller := trace.SpanContextFromContext(bus.ExtractTrace(context.Background(), msg.Header)); caller.IsValid() {
			span.AddLink(trace.Link{SpanContext: caller})
		}
	}

	d := &decision.Decision{Time: start.UTC(), FederationVersion: g.fs.Load().version}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		d.TraceID = sc.TraceID().String()
	}
	if consumer, ok := g.checkReply(msg); !ok {
		g.refuseReply(ctx, span, msg, d, consumer, start)
		return
	}
	payload, err := g.decide(ctx, msg, d)
	d.Latency = time.Since(start)
	st := status.Convert(err)
	d.Code = st.Code()
	d.Allowed = err == nil
	switch {
	case err == nil:
		d.Reason = decision.ReasonAllowed
	default:
		d.Reason = decision.ReasonOf(st)
		if d.Reason == "" {
			d.Reason = decision.ReasonProviderError
		}
		payload = nil
	}
	if d.VisibleAt.IsZero() {
		d.VisibleAt = d.Time
	}

	if !g.cfg.Unsafe.SkipAudit {
		astart := time.Now()
		actx, aspan := g.startStep(ctx, "gateway.audit.append")
		// A caller hanging up must not drop the record.
		aerr := g.cfg.Audit.Append(context.WithoutCancel(actx), d)
		endStep(aspan, aerr)
		g.metrics.auditLatency.Observe(time.Since(astart).Seconds())
		if aerr != nil {
			g.metrics.auditFailures.Inc()
			g.log.ErrorContext(ctx, "audit append failed: reply withheld", "err", aerr)
			payload = nil
			st = decision.Refuse(codes.Unavailable, decision.ReasonAuditUnavailable,
				"the audit log is unavailable, so no data was released; retry later").GRPCStatus()
			// The metrics count what the caller got (the record could not be written).
			d.Allowed, d.Code, d.Reason = false, codes.Unavailable, decision.ReasonAuditUnavailable
		}
	}
	g.metrics.observe(d)
	if span.IsRecording() {
		setQueryAttrs(span, msg, d, st.Code())
		if !d.Allowed {
			span.SetStatus(otelcodes.Error, st.Code().String())
		}
	}
	if !d.Allowed {
		g.log.InfoContext(ctx, "query refused", "consumer", d.Consumer, "provider", d.Provider, "method", d.Method,
			"reason", d.Reason, "code", st.Code().String())
	} else if g.log.Enabled(ctx, slog.LevelDebug) { // the arguments cost allocations even when dropped
		g.log.DebugContext(ctx, "query answered", "consumer", d.Consumer, "provider", d.Provider, "method", d.Method,
			"basis", d.LegalBasis, "fields", len(d.Fields))
	}
	if err := bus.RespondFrom(msg, payload, st, g.cfg.Instance); err != nil {
		g.log.WarnContext(ctx, "reply not sent", "consumer", d.Consumer, "err", err)
	}
}

// tracerScope is the instrumentation scope of the gateway's spans.
const tracerScope = "github.com/jisr-bus/jisr/gateway"

// checkReply reports whether the query's reply subject is the asker's own
// inbox: _INBOX.<consumer>.…, where consumer is the first token after
// jisr.q — the one NATS's permissions vouch for. The gateway may publish on
// every member's inbox, so an answer on any other subject would be the
// gateway publishing where the member chose (another member's inbox, a
// provider subject, the audit log, the JetStream API). consumer is returned
// when it names a member, for the refusal's record.
func (g *Gateway) checkReply(msg *nats.Msg) (consumer string, ok bool) {
	c, err := subject.QueryConsumer(msg.Subject)
	if err != nil {
		return "", false
	}
	if _, err := g.fs.Load().fed.Member(c); err != nil {
		return "", false
	}
	return c, bus.ReplyTo(msg, c) == nil
}

// refuseReply handles a query whose reply subject is not the asker's inbox:
// nothing is decided, forwarded or answered; the refusal is counted and
// audited, naming the consumer (when a member) and nothing the sender chose.
func (g *Gateway) refuseReply(ctx context.Context, span trace.Span, msg *nats.Msg, d *decision.Decision, consumer string, start time.Time) {
	d.Consumer = consumer
	d.Code, d.Allowed, d.Reason = codes.PermissionDenied, false, decision.ReasonBadReplySubject
	d.Latency = time.Since(start)
	d.VisibleAt = d.Time
	g.metrics.badReplies.WithLabelValues(metricMember(consumer)).Inc()
	if !g.cfg.Unsafe.SkipAudit {
		actx, aspan := g.startStep(ctx, "gateway.audit.append")
		aerr := g.cfg.Audit.Append(context.WithoutCancel(actx), d)
		endStep(aspan, aerr)
		if aerr != nil {
			g.metrics.auditFailures.Inc()
			g.log.ErrorContext(ctx, "audit append of a refused reply subject failed", "err", aerr)
		}
	}
	g.metrics.observe(d)
	if span.IsRecording() {
		a := spanAttrs.Get().(*queryAttrs)
		span.SetAttributes(append(bus.AppendMessagingAttrs(a[:0], "process", len(msg.Data)),
			attribute.String("jisr.consumer", consumer), attribute.Bool("jisr.allowed", false),
			attribute.String("jisr.reason", d.Reason))...)
		a.put()
		span.SetStatus(otelcodes.Error, codes.PermissionDenied.String())
	}
	g.log.WarnContext(ctx, "query dropped unanswered: its reply subject is not the asker's inbox",
		"consumer", consumer, "reason", d.Reason)
}

func metricMember(m string) string {
	if m == "" {
		return "unknown"
	}
	return m
}

// startStep starts the span of one gateway step under the query's span.
// When that span is not recording (not sampled, or no tracer provider) a
// child would not be recorded either, so none is started: a non-recording
// span still costs allocations on every query.
func (g *Gateway) startStep(ctx context.Context, name string) (context.Context, trace.Span) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	return g.tracer.Start(ctx, name)
}

// queryAttrs are the attributes of a query's span, set once it is decided:
// pooled, not a slice per query.
type queryAttrs [16]attribute.KeyValue

var spanAttrs = sync.Pool{New: func() any { return new(queryAttrs) }}

// put clears a (no ckey outlives its query in the pool) and returns it.
func (a *queryAttrs) put() {
	*a = queryAttrs{}
	spanAttrs.Put(a)
}

// setQueryAttrs records the attributes of a decided query on its span, in
// one SetAttributes (the span copies them once, and holds no key twice):
// the messaging attributes of the received message, its subject once
// checked, and the decision's.
func setQueryAttrs(span trace.Span, msg *nats.Msg, d *decision.Decision, code codes.Code) {
	a := spanAttrs.Get().(*queryAttrs)
	attrs := bus.AppendMessagingAttrs(a[:0], "process", len(msg.Data))
	if d.CKey != "" && d.Reason != decision.ReasonCKeyMismatch {
		// Provider, service and method were found in the federation and the
		// subject's ckey is the payload eID's (d.CKey): nothing else can be
		// in it. Its jisr.ckey is d.CKey.
		attrs = bus.AppendSubjectAttrs(attrs, msg.Subject)
	} else {
		attrs = append(attrs, attribute.String("jisr.ckey", d.CKey))
	}
	attrs = append(attrs,
		attribute.String("jisr.consumer", d.Consumer), attribute.String("jisr.provider", d.Provider),
		attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", d.Service), attribute.String("rpc.method", d.Method),
		attribute.String("jisr.legal_basis", d.LegalBasis),
		attribute.Bool("jisr.allowed", d.Allowed), attribute.String("jisr.reason", d.Reason),
		attribute.Int("rpc.grpc.status_code", int(code)))
	span.SetAttributes(attrs...) // the SDK's span copies them
	a.put()
}

// noSpan is a span that records nothing (the no-op span of an empty context).
var noSpan = trace.SpanFromContext(context.Background())

// endStep ends the span of one gateway step, marking it failed on err.
func endStep(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(otelcodes.Error, status.Code(err).String())
		span.SetAttributes(attribute.String("jisr.reason", decision.ReasonOf(status.Convert(err))))
	}
	span.End()
}

// decide runs the checks in order and, when all pass, forwards the query and
// returns the minimised reply. It fills d as it learns.
func (g *Gateway) decide(ctx context.Context, msg *nats.Msg, d *decision.Decision) ([]byte, error) {
	if q, err := subject.ParseQuery(msg.Subject); err == nil && q.Provider == subject.ConsentProvider {
		return g.consentRequest(ctx, q, msg.Data, d)
	}
	q, consumer, m, err := g.name(msg.Subject, d)
	if err != nil {
		return nil, err
	}

	req, rawEID, err := m.Decode(msg.Data)
	switch {
	case errors.Is(err, catalog.ErrNoEID):
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadEID, "the request carries no eID")
	case err != nil:
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the request payload is not a valid %s", m.Input.Descriptor().FullName())
	}
	eid, err := g.fs.Load().fed.NormaliseEID(rawEID)
	if err != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadEID, "the eID does not match the federation's eID format (%s)", g.fs.Load().fed.EID)
	}
	ck := g.cfg.Keyer.CKey(eid)
	d.CKey = ck // always the key derived from the payload, never the subject's
	if !ckey.Equal(ck, q.CKey) {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonCKeyMismatch, "the subject's citizen key does not match the request's eID")
	}

	purpose := msg.Header.Get(bus.HeaderPurpose)
	if federation.CheckPurpose(purpose) != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonPurposeMissing, "a purpose is required: send it in jisr-purpose metadata")
	}
	d.Purpose = purpose
	token := msg.Header.Get(bus.HeaderConsent)
	_, rspan := g.startStep(ctx, "gateway.policy.check")
	rule, err := g.fs.Load().pol.Check(q.Consumer, q.Provider, m.Service, m.Name, purpose, token != "")
	endStep(rspan, err)
	if err != nil {
		return nil, err
	}
	d.Rule, d.LegalBasis, d.Law = rule.Name, rule.LegalBasis, rule.Law
	d.VisibleAt = d.Time.Add(rule.LogDelay)

	if err := g.fixParams(req, rule, m); err != nil {
		return nil, err
	}
	// Counted before the consent check, so a refused limit spends no use of
	// a max_uses token; a query refused later still counts (per replica, in
	// memory: see package quota).
	if m.Predicate && rule.PredicateLimit.Count > 0 &&
		!g.quota.Allow(rule.Name+"\x00"+q.Consumer+"\x00"+ck, rule.PredicateLimit.Count, rule.PredicateLimit.Period, d.Time) {
		return nil, decision.Refuse(codes.ResourceExhausted, decision.ReasonPredicateLimit,
			"rule %s allows %d predicate queries about one citizen per %s", rule.Name, rule.PredicateLimit.Count, rule.PredicateLimit.Period)
	}

	fields := ruleFields(rule)
	if rule.LegalBasis != federation.BasisMandate && !g.cfg.Unsafe.SkipConsent {
		cctx, cspan := g.startStep(ctx, "gateway.consent.verify")
		grant, err := g.cfg.Consent.Verify(cctx, &decision.Request{
			Consumer: q.Consumer, ConsumerID: consumer.ID, Provider: q.Provider,
			Service: m.Service, Method: m.Name, CKey: ck, Purpose: purpose, Token: token,
			Rule: rule, Predicate: m.Predicate, Now: d.Time,
		})
		endStep(cspan, err)
		if grant != nil {
			d.TokenID = grant.TokenID
		}
		if err != nil {
			return nil, err
		}
		fields = minimise.Intersect(fields, grant.Fields)
	}

	// The provider gets the request as the gateway read it, re-encoded:
	// fields no descriptor knows (padding, smuggled data) never reach it,
	// and the eID is the normalised one whose consent was checked.
	req.ProtoReflect().Set(m.EID, protoreflect.ValueOfString(eid))
	if n := minimise.DropUnknown(req.ProtoReflect()); n > 0 {
		g.metrics.unknownFields.WithLabelValues(q.Consumer, q.Provider, "request").Add(float64(n))
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonMalformedPayload, "the request payload is not a valid %s", m.Input.Descriptor().FullName())
	}
	reply, err := g.forward(ctx, q, data, purpose)
	if err != nil {
		return nil, err
	}
	if g.cfg.Unsafe.SkipMinimise {
		return reply, nil
	}
	return g.minimise(ctx, q, m, reply, fields, ruleFields(rule), d)
}

// fixParams sets the predicate parameters that the rule fixes into the
// request. A caller may leave one unset or send exactly the rule's value;
// any other value is refused, so a yes/no question cannot be asked with
// chosen values until it gives the hidden value away.
func (g *Gateway) fixParams(req proto.Message, rule *federation.Rule, m *catalog.Method) error {
	r := req.ProtoReflect()
	for _, p := range g.fs.Load().cat.Params(rule, m) {
		if r.Has(p.Field) && !r.Get(p.Field).Equal(p.Value) {
			return decision.Refuse(codes.PermissionDenied, decision.ReasonPredicateParameter,
				"%s is fixed by rule %s: leave it unset or send the rule's value", p.Field.Name(), rule.Name)
		}
		r.Set(p.Field, p.Value)
	}
	return nil
}

// minimise drops the reply's unknown fields at every level, trims it to the
// agreed fields, clears the named_only fields the rule itself does not name
// (named: a token's fields cannot release them), and records in d the
// fields of the bytes that leave, so that the audit record says what was
// released, not what was meant to be.
//
// A reply type the wire pass covers (the ministries' replies: see
// minimise.WirePlanFor) is minimised in one pass over its bytes, which
// lists the released fields as it emits them; any other, and a reply
// nested deeper than the wire plans reach, is decoded, trimmed, encoded
// and decoded again (the reference the wire pass is fuzzed against).
func (g *Gateway) minimise(ctx context.Context, q subject.Query, m *catalog.Method, reply []byte, fields, named []string, d *decision.Decision) ([]byte, error) {
	_, mspan := g.startStep(ctx, "gateway.minimise")
	defer mspan.End()
	if p := minimise.WirePlanFor(m.Output.Descriptor(), fields, named); p != nil {
		b, released, unknown, err := p.Apply(reply)
		switch {
		case err == nil:
			g.droppedUnknown(ctx, q, m, unknown)
			d.Fields = released
			return b, nil
		case !errors.Is(err, minimise.ErrTooDeep):
			return nil, decision.Refuse(codes.Internal, decision.ReasonProviderError, "the provider's reply is not a valid %s", m.Output.Descriptor().FullName())
		}
	}
	out := m.Output.New().Interface()
	if err := proto.Unmarshal(reply, out); err != nil {
		return nil, decision.Refuse(codes.Internal, decision.ReasonProviderError, "the provider's reply is not a valid %s", m.Output.Descriptor().FullName())
	}
	g.droppedUnknown(ctx, q, m, minimise.DropUnknown(out.ProtoReflect()))
	minimise.Trim(out.ProtoReflect(), fields)
	minimise.ClearNamedOnly(out.ProtoReflect(), named)
	minimise.CanonicalNaN(out.ProtoReflect())
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
	if err != nil {
		return nil, decision.Refuse(codes.Internal, decision.ReasonMinimisation, "the reply could not be minimised")
	}
	sent := m.Output.New().Interface()
	if err := proto.Unmarshal(b, sent); err != nil {
		return nil, decision.Refuse(codes.Internal, decision.ReasonMinimisation, "the reply could not be minimised")
	}
	d.Fields = minimise.Released(sent.ProtoReflect())
	return b, nil
}

// droppedUnknown counts and logs the unknown fields dropped from a reply.
func (g *Gateway) droppedUnknown(ctx context.Context, q subject.Query, m *catalog.Method, n int) {
	if n > 0 {
		g.metrics.unknownFields.WithLabelValues(q.Consumer, q.Provider, "reply").Add(float64(n))
		g.log.WarnContext(ctx, "provider reply carried unknown fields: dropped", "provider", q.Provider, "method", m.Name, "fields", n)
	}
}

// name fills d with the consumer, provider, service and method of a query
// subject, each once the federation knows it, in the order decide checks
// them; it returns them, or the refusal of the first that does not check.
func (g *Gateway) name(subj string, d *decision.Decision) (subject.Query, *federation.Member, *catalog.Method, error) {
	q, err := subject.ParseQuery(subj)
	if err != nil {
		// A member may publish only on jisr.q.<itself>.>, so even a subject
		// that does not parse (a wildcard, a token too many) names its sender
		// in its first token.
		if c, err := g.fs.Load().fed.Member(consumerToken(subj)); err == nil {
			d.Consumer = c.Name
		}
		return q, nil, nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadSubject, "malformed query subject")
	}
	consumer, err := g.fs.Load().fed.Member(q.Consumer)
	if err != nil {
		return q, nil, nil, decision.Refuse(codes.PermissionDenied, decision.ReasonUnknownMember, "unknown consumer member")
	}
	d.Consumer = q.Consumer
	if _, err := g.fs.Load().fed.Member(q.Provider); err != nil {
		return q, nil, nil, decision.Refuse(codes.NotFound, decision.ReasonUnknownMember, "unknown provider member")
	}
	d.Provider = q.Provider
	m, err := g.fs.Load().cat.Lookup(q.Service, q.Method)
	if err != nil {
		return q, nil, nil, decision.Refuse(codes.NotFound, decision.ReasonUnknownMethod, "unknown service or method")
	}
	d.Service, d.Method = m.Service, m.Name
	if !g.fs.Load().fed.Provides(q.Provider, m.Service) {
		return q, nil, nil, decision.Refuse(codes.NotFound, decision.ReasonUnknownMethod, "%s does not provide %s", q.Provider, m.Service)
	}
	return q, consumer, m, nil
}

// forward sends the re-encoded request to the provider and returns its
// reply payload. Of a provider's error status, only the code passes.
func (g *Gateway) forward(ctx context.Context, q subject.Query, data []byte, purpose string) ([]byte, error) {
	subj, err := q.ProviderSubject()
	if err != nil {
		return nil, decision.Refuse(codes.InvalidArgument, decision.ReasonBadSubject, "malformed query subject")
	}
	out := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
	out.Header.Set(bus.HeaderPurpose, purpose)
	out.Header.Set(bus.HeaderConsumer, q.Consumer)
	if seen := g.backends.header(q.Provider, time.Now()); seen != "" {
		out.Header.Set(bus.HeaderBackends, seen)
	}
	reply, err := bus.Call(ctx, g.conn(ctx), out, g.spanOpts...) // its span is the forward step
	if err == nil {
		g.backends.saw(q.Provider, reply.Header.Get(bus.HeaderBackend), time.Now())
		return reply.Data, nil
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable:
		if decision.ReasonOf(st) == "" {
			return nil, decision.Refuse(codes.Unavailable, decision.ReasonProviderUnavailable, "provider %s is unavailable", q.Provider)
		}
	case codes.DeadlineExceeded:
		return nil, decision.Refuse(codes.DeadlineExceeded, decision.ReasonDeadline, "provider %s did not answer before the deadline", q.Provider)
	case codes.NotFound:
		if decision.ReasonOf(st) == "" {
			return nil, decision.Refuse(codes.NotFound, decision.ReasonProviderNotFound, "provider %s has no record for this citizen", q.Provider)
		}
	}
	// The provider's message is free text that minimisation cannot read
	// (it may name the citizen or carry fields no one agreed to): only the
	// code passes.
	return nil, decision.Refuse(st.Code(), decision.ReasonProviderError, "provider %s refused the query with %s (its message is withheld: it may carry citizen data)", q.Provider, st.Code())
}

// ruleFields turns a rule's field list into a minimise set (nil = whole reply).
func ruleFields(r *federation.Rule) []string {
	if len(r.Fields) == 0 {
		return nil
	}
	return r.Fields
}
