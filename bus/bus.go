// Package bus carries gRPC calls over NATS: it connects with the caller's
// SVID over mutual TLS, and moves gRPC status codes, deadlines, purpose,
// consent and W3C trace context across NATS headers.
//
// Invariant: a reply without a status header is OK, and a status message is
// written only from fixed texts by the federation's own parts — never from a
// payload — so no citizen data can ride on a status.
package bus

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/svid"
)

// NATS header keys. The gRPC ones keep gRPC's names; trace context uses the
// exact W3C keys.
const (
	HeaderStatus  = "Grpc-Status"
	HeaderMessage = "Grpc-Message"
	HeaderDetails = "Grpc-Status-Details-Bin"
	HeaderTimeout = "Grpc-Timeout"
	HeaderGateway = "Jisr-Gateway" // the gateway replica that answered
	// HeaderBackend: a provider adapter's answer to the gateway names its
	// backend by a fingerprint (BackendFingerprint), so the gateway can tell
	// when two adapters of one member, in one queue group, call different
	// backends. HeaderBackends: the gateway's request to a provider lists the
	// fingerprints it has seen answer for that member lately, when there
	// are several, so each adapter can warn too.
	HeaderBackend  = "Jisr-Backend"
	HeaderBackends = "Jisr-Backends"
	HeaderPurpose  = "Jisr-Purpose"
	HeaderConsent  = "Jisr-Consent"
	HeaderConsumer = "Jisr-Consumer"
	// The W3C trace context (traceparent, tracestate values) under jisr's
	// own names: nats-server (2.11+) collects every header of a message
	// whose "traceparent" is sampled into a map, for its own message
	// tracing, which jisr does not use — about 12 allocations and a copy of
	// all headers (a consent token included) per message.
	HeaderTraceparent = "Jisr-Traceparent"
	HeaderTracestate  = "Jisr-Tracestate"
)

// gRPC metadata keys a backend uses when calling its adapter, and that the
// provider adapter sets when calling its backend.
const (
	MetadataConsent  = "jisr-consent"
	MetadataPurpose  = "jisr-purpose"
	MetadataProvider = "jisr-provider"
	MetadataConsumer = "jisr-consumer"
)

// DefaultTimeout applies when a caller sets no deadline.
const DefaultTimeout = 10 * time.Second

// MaxEventBytes bounds one life event, encoded: the gateway refuses a
// larger one, and an adapter refuses it as soon as its backend sends it.
const MaxEventBytes = 64 << 10

// ErrEmptyURL is returned by Connect without a server URL.
var ErrEmptyURL = errors.New("bus: empty NATS URL")

// ErrConfig reports a missing or bad Config field; the message names it.
var ErrConfig = errors.New("bus: invalid configuration")

// Config holds what Connect requires.
type Config struct {
	// URL is the federation's NATS server.
	URL string
	// Identity is the identity connecting: a member name, "gateway",
	// "consent" or "auditor".
	Identity string
	// Source gives the identity's SVID.
	Source svid.Source
	// ServerID is the SPIFFE ID the server must present.
	ServerID spiffeid.ID
}

type options struct {
	log     *slog.Logger
	name    string
	natsOpt []nats.Option
}

// Option configures Connect.
type Option func(*options)

// WithLogger sets the logger for connection events.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithName sets the connection name shown in NATS monitoring.
func WithName(n string) Option { return func(o *options) { o.name = n } }

// WithNATSOptions appends raw nats.go options (tests use it for short timeouts).
func WithNATSOptions(opts ...nats.Option) Option {
	return func(o *options) { o.natsOpt = append(o.natsOpt, opts...) }
}

// Connect dials the federation's NATS server (cfg.URL) as cfg.Identity with
// the SVID from cfg.Source. The server must present the SVID of
// cfg.ServerID. Replies come to _INBOX.<identity>.>, the only inbox the
// identity may subscribe to.
func Connect(ctx context.Context, cfg Config, opts ...Option) (*nats.Conn, error) {
	url, identity, src, serverID := cfg.URL, cfg.Identity, cfg.Source, cfg.ServerID
	if url == "" {
		return nil, ErrEmptyURL
	}
	if err := subject.CheckToken(identity); err != nil {
		return nil, fmt.Errorf("bus: identity %q: %w", identity, err)
	}
	switch {
	case src == nil:
		return nil, fmt.Errorf("%w: Source is required", ErrConfig)
	case serverID.IsZero():
		return nil, fmt.Errorf("%w: ServerID is required", ErrConfig)
	}
	o := options{log: slog.Default(), name: "jisr-" + identity}
	for _, opt := range opts {
		opt(&o)
	}
	tlsConf := svid.ClientTLS(src, tlsconfig.AuthorizeID(serverID))
	presented := presentedCert(tlsConf)
	log := o.log.With("component", "bus", "identity", identity)
	nopts := []nats.Option{
		nats.Name(o.name),
		nats.Secure(tlsConf),
		nats.CustomInboxPrefix(subject.Inbox(identity)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(8 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("NATS async error", "subject", sub.Subject, "err", err)
				return
			}
			log.Error("NATS async error", "err", err)
		}),
	}
	nopts = append(nopts, o.natsOpt...)
	type result struct {
		nc  *nats.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, nopts...)
		ch <- result{nc, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("bus: connect to %s as %s: %w", url, identity, r.err)
		}
		st := &connState{}
		conns.Store(r.nc, st)
		go renewBeforeExpiry(r.nc, src, presented, st, log)
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// ClientTLSConfig is exposed for tools (the `nats` CLI walkthrough in tests).
func ClientTLSConfig(src svid.Source, serverID spiffeid.ID) *tls.Config {
	return svid.ClientTLS(src, tlsconfig.AuthorizeID(serverID))
}

// SetStatus writes st into h. OK is written as no header at all.
func SetStatus(h nats.Header, st *status.Status) {
	if st == nil || st.Code() == codes.OK {
		return
	}
	h.Set(HeaderStatus, strconv.Itoa(int(st.Code())))
	h.Set(HeaderMessage, headerSafe(st.Message()))
	if p := st.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			h.Set(HeaderDetails, base64.RawStdEncoding.EncodeToString(b))
		}
	}
}

// StatusOf reads the status of a reply. A missing status header is OK; an
// unreadable one is Internal.
func StatusOf(h nats.Header) *status.Status {
	v := h.Get(HeaderStatus)
	if v == "" {
		return okStatus
	}
	c, err := strconv.Atoi(v)
	if err != nil || c <= 0 || c > 16 {
		return status.New(codes.Internal, "bus: unreadable status in reply")
	}
	if d := h.Get(HeaderDetails); d != "" {
		if b, err := base64.RawStdEncoding.DecodeString(d); err == nil {
			var p spb.Status
			if proto.Unmarshal(b, &p) == nil && p.GetCode() == int32(c) {
				return status.FromProto(&p)
			}
		}
	}
	return status.New(codes.Code(c), h.Get(HeaderMessage))
}

// okStatus is the status of every reply without a status header: a
// *status.Status is never changed once made, so one serves them all.
var okStatus = status.New(codes.OK, "")

// headerSafe keeps a status message on one header line.
func headerSafe(s string) string {
	if len(s) > 512 {
		s = s[:512]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// Respond answers a request with a payload (nil unless st is OK) and a status.
func Respond(msg *nats.Msg, payload []byte, st *status.Status) error {
	return RespondFrom(msg, payload, st, "")
}

// ErrBadReply is returned, and nothing is sent, when a request's reply
// subject is not an inbox (_INBOX.<identity>.<token>…): an answer never goes
// to a JetStream API, key-value or federation subject, whoever asked.
var ErrBadReply = subject.ErrBadReply

// ReplyTo reports whether msg's reply subject lies in identity's inbox
// (_INBOX.<identity>.…, safe tokens only). A component checks it before any
// work for the request: the gateway with the consumer named by the query
// subject, a provider adapter with "gateway".
func ReplyTo(msg *nats.Msg, identity string) error {
	return subject.CheckReply(msg.Reply, identity)
}

// RespondFrom is Respond with the answering gateway replica named in the
// Jisr-Gateway header (for operators, and for measuring per replica). The
// answer carries only the headers set here (status, Jisr-Gateway), never
// one of the request's.
func RespondFrom(msg *nats.Msg, payload []byte, st *status.Status, instance string) error {
	return respond(msg, payload, st, HeaderGateway, instance)
}

// RespondFromBackend is Respond for a provider adapter, naming its backend's
// fingerprint in the Jisr-Backend header (only the gateway reads it).
func RespondFromBackend(msg *nats.Msg, payload []byte, st *status.Status, fingerprint string) error {
	return respond(msg, payload, st, HeaderBackend, fingerprint)
}

// BackendFingerprint names a backend address without spelling it out: the
// first 12 hex digits of its SHA-256.
func BackendFingerprint(addr string) string {
	sum := sha256.Sum256([]byte(addr))
	return hex.EncodeToString(sum[:6])
}

func respond(msg *nats.Msg, payload []byte, st *status.Status, header, value string) error {
	if msg.Reply == "" {
		return nil
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(msg.Reply, subject.InboxPrefix+"."), ".")
	if err := subject.CheckReply(msg.Reply, id); err != nil {
		return err
	}
	out := &nats.Msg{Subject: msg.Reply, Header: nats.Header{}}
	if value != "" {
		out.Header.Set(header, value)
	}
	if st == nil || st.Code() == codes.OK {
		out.Data = payload
	} else {
		SetStatus(out.Header, st)
	}
	return msg.RespondMsg(out)
}

// RespondError answers a request with an error status and no payload.
func RespondError(msg *nats.Msg, err error) error {
	return Respond(msg, nil, status.Convert(err))
}

// SetTimeout writes the time left before ctx's deadline into h, in gRPC's
// grpc-timeout format (milliseconds), so the next hop can honour it.
func SetTimeout(ctx context.Context, h nats.Header) {
	d, ok := ctx.Deadline()
	if !ok {
		return
	}
	ms := time.Until(d).Milliseconds()
	if ms < 1 {
		ms = 1
	}
	var buf [24]byte
	h[HeaderTimeout] = []string{string(append(strconv.AppendInt(buf[:0], ms, 10), 'm'))}
}

// Timeout reads the grpc-timeout header; without one (or an unreadable one)
// it returns def. The result never exceeds max.
func Timeout(h nats.Header, def, max time.Duration) time.Duration {
	d := def
	if v := h.Get(HeaderTimeout); len(v) >= 2 {
		n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
		if err == nil && n > 0 && n < 1e8 {
			if unit := timeoutUnit(v[len(v)-1]); unit != 0 {
				d = time.Duration(n) * unit
			}
		}
	}
	if max > 0 && d > max {
		d = max
	}
	return d
}

// timeoutUnit is the duration of a grpc-timeout unit letter (0: none).
func timeoutUnit(c byte) time.Duration {
	switch c {
	case 'H':
		return time.Hour
	case 'M':
		return time.Minute
	case 'S':
		return time.Second
	case 'm':
		return time.Millisecond
	case 'u':
		return time.Microsecond
	case 'n':
		return time.Nanosecond
	}
	return 0
}

// Trace context travels in the W3C format (traceparent, tracestate)
// whatever global propagator the process set, under the headers
// HeaderTraceparent and HeaderTracestate.
var traceContext = propagation.TraceContext{}

// HeaderCarrier adapts nats.Header to OpenTelemetry's TextMapCarrier: the
// W3C keys traceparent and tracestate are kept in HeaderTraceparent and
// HeaderTracestate (NATS headers are case-sensitive, so spelled exactly);
// a header named "traceparent" on the bus is not read.
type HeaderCarrier nats.Header

// natsKey is the NATS header that holds the W3C key.
func natsKey(key string) string {
	switch key {
	case "traceparent":
		return HeaderTraceparent
	case "tracestate":
		return HeaderTracestate
	}
	return key
}

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(natsKey(key)) }

// Set sets key to value.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(natsKey(key), value) }

// Keys lists the keys present, the trace headers by their W3C names.
func (c HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		switch k {
		case HeaderTraceparent:
			k = "traceparent"
		case HeaderTracestate:
			k = "tracestate"
		}
		out = append(out, k)
	}
	return out
}

// InjectTrace writes ctx's span context into h: what
// propagation.TraceContext writes, and for a span context without a
// tracestate (every one the gateway starts) in one allocation instead of
// two — the header's value and the slice that holds it, together.
func InjectTrace(ctx context.Context, h nats.Header) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	if sc.TraceState().Len() != 0 {
		traceContext.Inject(ctx, HeaderCarrier(h))
		return
	}
	p := new(traceparent)
	b := append(p.buf[:0], "00-"...)
	tid, sid := sc.TraceID(), sc.SpanID()
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	// Only the flags the specification defines: sampled and random.
	b = hex.AppendEncode(b, []byte{byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom))})
	p.value[0] = unsafe.String(&p.buf[0], len(b)) // p.buf is never written again
	h[HeaderTraceparent] = p.value[:]
}

// traceparent is a traceparent header's value ("00-" trace id "-" span id
// "-" flags: 55 bytes) and the one-element slice nats.Header keeps it in.
type traceparent struct {
	value [1]string
	buf   [55]byte
}

// ExtractTrace returns ctx with the remote span context found in h.
func ExtractTrace(ctx context.Context, h nats.Header) context.Context {
	return traceContext.Extract(ctx, HeaderCarrier(h))
}

// noResponderRetry bounds how long Call asks again a request that found no
// responder.
const noResponderRetry = time.Second

// Call sends a request and waits for its reply. Transport failures become
// gRPC statuses: no responders → Unavailable, deadline → DeadlineExceeded,
// cancellation → Canceled, an oversized payload → InvalidArgument. A reply
// with a non-OK status is returned as that status's error.
//
// The call is one client span ("send jisr.q", "send jisr.p") whose context
// travels in the request's HeaderTraceparent header.
func Call(ctx context.Context, nc *nats.Conn, msg *nats.Msg, opts ...SpanOption) (reply *nats.Msg, err error) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	ctx, span := StartSpan(ctx, "send", msg.Subject, trace.SpanKindClient, len(msg.Data), opts...)
	defer func() { EndSpan(span, err) }()
	InjectTrace(ctx, msg.Header)
	if max := nc.MaxPayload(); max > 0 && int64(len(msg.Data)+headerSize(msg.Header)) > max {
		return nil, status.Error(codes.InvalidArgument, "request exceeds the bus's maximum payload")
	}
	// During a planned reconnection (a renewed SVID) the call waits for it;
	// the reconnection waits for the calls in flight.
	if st := stateOf(nc); st != nil {
		if err := st.enter(ctx); err != nil {
			return nil, err
		}
		defer st.leave()
	}
	// A connection that is reconnecting would buffer the request and let
	// the caller wait out its deadline: fail at once instead (the member's
	// link to the hub is down; its caller retries).
	if !nc.IsConnected() {
		return nil, status.Error(codes.Unavailable, "the bus connection is not available (reconnecting)")
	}
	SetTimeout(ctx, msg.Header)
	reply, err = nc.RequestMsgWithContext(ctx, msg)
	// No responder: the request reached no one, so asking again cannot
	// deliver it twice. A responder reconnecting (a renewed SVID) is back
	// within noResponderRetry; a responder that is down still fails the
	// call with Unavailable, that much later.
	for wait, start := 20*time.Millisecond, time.Now(); errors.Is(err, nats.ErrNoResponders) && time.Since(start) < noResponderRetry; wait = min(2*wait, 200*time.Millisecond) {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			reply, err = nc.RequestMsgWithContext(ctx, msg)
			continue
		}
		break
	}
	if err != nil {
		return nil, TransportStatus(ctx, err)
	}
	if st := StatusOf(reply.Header); st.Code() != codes.OK {
		return nil, st.Err()
	}
	return reply, nil
}

// tracerScope is the instrumentation scope of the bus's spans.
const tracerScope = "github.com/jisr-bus/jisr/bus"

type spanOptions struct {
	tracer trace.Tracer
}

// SpanOption configures the spans of Call, StartSpan and StartUnverifiedSpan.
type SpanOption func(*spanOptions)

// WithTracerProvider sends the spans to tp (default: the global provider,
// otel.GetTracerProvider(), as it is at the call). The tracer is looked up
// once, here: build the option once and reuse it on the hot path.
func WithTracerProvider(tp trace.TracerProvider) SpanOption {
	t := tp.Tracer(tracerScope)
	return func(o *spanOptions) { o.tracer = t }
}

// tracer returns the tracer the options name.
func tracer(opts []SpanOption) trace.Tracer {
	var t trace.Tracer
	if len(opts) > 0 {
		// The options write into a pooled struct: a local one would escape
		// (the options are calls of unknown functions), one allocation per
		// span on the query path.
		o := spanOptionsPool.Get().(*spanOptions)
		for _, opt := range opts {
			opt(o)
		}
		t, o.tracer = o.tracer, nil
		spanOptionsPool.Put(o)
	}
	if t == nil {
		return otel.GetTracerProvider().Tracer(tracerScope)
	}
	return t
}

var spanOptionsPool = sync.Pool{New: func() any { return new(spanOptions) }}

// spanKinds are the start options of each span kind, made once and indexed
// by kind (no map lookup per span): passing a fresh trace.WithSpanKind to a
// tracer allocates its variadic slice.
var spanKinds = func() (k [trace.SpanKindConsumer + 1][]trace.SpanStartOption) {
	for i := range k {
		k[i] = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKind(i))}
	}
	return k
}()

func kindOption(kind trace.SpanKind) []trace.SpanStartOption {
	if kind >= 0 && int(kind) < len(spanKinds) {
		return spanKinds[kind]
	}
	return []trace.SpanStartOption{trace.WithSpanKind(kind)}
}

// start starts a span. A no-op tracer (a process that records no traces)
// with no span in ctx would only put its empty span in a new context: ctx
// already yields that span, so it is returned as is, one allocation less
// per span.
func start(ctx context.Context, t trace.Tracer, operation, subj string, kind trace.SpanKind) (context.Context, trace.Span) {
	if _, ok := t.(noop.Tracer); ok {
		if span := trace.SpanFromContext(ctx); !span.SpanContext().IsValid() && !span.IsRecording() {
			return ctx, span
		}
	}
	return t.Start(ctx, spanName(operation, subj), kindOption(kind)...)
}

// StartSpan starts a messaging span for one NATS operation ("send" a
// request, "process" a received one) on subject, following the OpenTelemetry
// messaging conventions (messaging.operation is the older name of
// messaging.operation.type; both are set for backends of either age).
// Subjects carry ckeys at most, never an eID; a query's or provider
// request's ckey is also the span's jisr.ckey.
func StartSpan(ctx context.Context, operation, subj string, kind trace.SpanKind, size int, opts ...SpanOption) (context.Context, trace.Span) {
	ctx, span := start(ctx, tracer(opts), operation, subj, kind)
	if span.IsRecording() {
		buf := attrBufs.Get().(*attrBuf)
		span.SetAttributes(AppendSubjectAttrs(AppendMessagingAttrs(buf[:0], operation, size), subj)...)
		buf.put()
	}
	return ctx, span
}

// StartUnverifiedSpan is StartSpan for a received message whose subject its
// sender chose: a query at the gateway, where NATS vouches only for the
// consumer token and the sender picks every other token. Until the receiver
// has checked the subject (known provider and method, a ckey that matches
// the payload's eID), only its family is recorded — a hostile member could
// put anything, an eID included, in a token. SetSpanSubject records the
// whole subject once checked.
func StartUnverifiedSpan(ctx context.Context, operation, subj string, kind trace.SpanKind, size int, opts ...SpanOption) (context.Context, trace.Span) {
	ctx, span := start(ctx, tracer(opts), operation, subj, kind)
	if span.IsRecording() {
		buf := attrBufs.Get().(*attrBuf)
		span.SetAttributes(AppendMessagingAttrs(buf[:0], operation, size)...)
		buf.put()
	}
	return ctx, span
}

// StartBareSpan is StartUnverifiedSpan without the attributes: for a
// receiver that records them all at once when it has decided
// (AppendMessagingAttrs, AppendSubjectAttrs and its own, in one
// SetAttributes), so that the SDK's span copies one slice instead of
// growing its attributes at each call. Until then the span has none: an
// unchecked subject is never recorded.
func StartBareSpan(ctx context.Context, operation, subj string, kind trace.SpanKind, opts ...SpanOption) (context.Context, trace.Span) {
	return start(ctx, tracer(opts), operation, subj, kind)
}

// SetSpanSubject records a checked subject (and its ckey) on span.
func SetSpanSubject(span trace.Span, subj string) {
	if span.IsRecording() {
		buf := attrBufs.Get().(*attrBuf)
		span.SetAttributes(AppendSubjectAttrs(buf[:0], subj)...)
		buf.put()
	}
}

// attrBuf holds a span's attributes while SetAttributes copies them in (the
// SDK's spans keep a copy, never the caller's slice), so the spans of the
// query path reuse pooled buffers instead of a slice per call.
type attrBuf [8]attribute.KeyValue

var attrBufs = sync.Pool{New: func() any { return new(attrBuf) }}

// put clears b (no subject outlives its span in the pool) and returns it.
func (b *attrBuf) put() {
	*b = attrBuf{}
	attrBufs.Put(b)
}

// AppendMessagingAttrs appends the messaging attributes of a span of one
// NATS operation (StartSpan records them): messaging.system,
// messaging.operation.type and its older name messaging.operation, and
// messaging.message.body.size.
func AppendMessagingAttrs(a []attribute.KeyValue, operation string, size int) []attribute.KeyValue {
	return append(a,
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", operation),
		attribute.String("messaging.operation", operation),
		attribute.Int("messaging.message.body.size", size),
	)
}

// AppendSubjectAttrs appends the attributes of a checked subject:
// messaging.destination.name and, for a query or provider request, its
// ckey as jisr.ckey.
func AppendSubjectAttrs(a []attribute.KeyValue, subj string) []attribute.KeyValue {
	a = append(a, attribute.String("messaging.destination.name", subj))
	if ck := subject.CKey(subj); ck != "" {
		a = append(a, attribute.String("jisr.ckey", ck))
	}
	return a
}

// EndSpan records err's gRPC code on span and ends it.
func EndSpan(span trace.Span, err error) {
	if err != nil {
		st := status.Convert(err)
		span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(st.Code())))
		span.SetStatus(otelcodes.Error, st.Code().String())
	}
	span.End()
}

// spanName is "<operation> <family>", e.g. "send jisr.q": low-cardinality,
// and built without allocating for the query path's own subjects, so a span
// costs nothing when nothing records it.
func spanName(operation, subj string) string {
	switch fam := subjectFamily(subj); {
	case operation == "send" && fam == subject.QueryPrefix:
		return "send " + subject.QueryPrefix
	case operation == "send" && fam == subject.ProviderPrefix:
		return "send " + subject.ProviderPrefix
	case operation == "process" && fam == subject.QueryPrefix:
		return "process " + subject.QueryPrefix
	case operation == "process" && fam == subject.ProviderPrefix:
		return "process " + subject.ProviderPrefix
	default:
		return operation + " " + fam
	}
}

// subjectFamily is the low-cardinality head of a subject ("jisr.q"), for
// span names.
func subjectFamily(subj string) string {
	if i := strings.IndexByte(subj, '.'); i >= 0 {
		if j := strings.IndexByte(subj[i+1:], '.'); j >= 0 {
			return subj[:i+1+j]
		}
	}
	return subj
}

// TransportStatus maps a NATS request error to a gRPC status error.
func TransportStatus(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return status.Error(codes.Unavailable, "no responder for this service is connected")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded waiting for the reply")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "call cancelled")
	case errors.Is(err, nats.ErrMaxPayload):
		return status.Error(codes.InvalidArgument, "request exceeds the bus's maximum payload")
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected):
		return status.Error(codes.Unavailable, "the bus connection is not available")
	case errors.Is(err, nats.ErrPermissionViolation):
		return status.Error(codes.PermissionDenied, "the bus refused this subject for this identity")
	}
	if ctx.Err() != nil {
		return TransportStatus(ctx, ctx.Err())
	}
	return status.Error(codes.Unavailable, "bus request failed")
}

func headerSize(h nats.Header) int {
	n := 12
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// Flush waits until the server has processed everything sent so far (so a
// subscription is in place, or a permission error has arrived). Without a
// deadline on ctx it waits at most five seconds.
func Flush(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return err
	}
	return nc.LastError()
}
