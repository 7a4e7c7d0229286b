package adapter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/refusal"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/bus/workers"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	"github.com/jisr-bus/jisr/proto/unknownfields"
)

// Sentinel errors.
var (
	ErrConfig             = errors.New("adapter: invalid configuration")
	ErrPlaintextNotLocal  = fmt.Errorf("adapter: %w; give the adapter an SVID for mTLS", loopback.ErrPlaintext)
	ErrProviderNotAllowed = errors.New("adapter: this member provides no service")
)

// Config is the adapter's configuration, validated once by New.
type Config struct {
	Member     string
	Federation *federation.Federation
	Keyer      *ckey.Keyer
	Conn       *nats.Conn
	// MoreConns are further connections of the member's identity: the
	// consumer side spreads its queries over Conn and these, the events it
	// publishes by citizen (eventConn), the provider side takes requests on
	// each (one queue group) and answers on the one a request arrived on —
	// one connection serialises its own reads and writes. The adapter does
	// not close them.
	MoreConns []*nats.Conn
	Log       *slog.Logger
	// Services are descriptors of services given besides the federation's
	// descriptor sets (default none: every ministry's services come from
	// its descriptor set; jisr links no ministry's schema).
	Services []protoreflect.ServiceDescriptor
	// DescriptorSets hold the content of the descriptor sets the federation
	// file names (descriptor_sets), by file name: the services of every
	// member (bus/descset). Default: Federation.Descriptors (read beside
	// the federation file by federation.Load). A new version brings its own.
	DescriptorSets map[string][]byte
	// Backend is the provider side's backend gRPC address; "" runs the
	// consumer side only. BackendTLS (mTLS with the adapter's SVID) is
	// required unless the address is loopback.
	Backend    string
	BackendTLS *tls.Config
	// MaxInFlight bounds provider-side requests handled at once (default 1024).
	MaxInFlight int
	// DefaultTimeout applies to calls without a deadline.
	DefaultTimeout time.Duration
	// GRPCOptions are extra options for the consumer-side server and the
	// backend connection (stats handlers for tracing, for example).
	ServerOptions []grpc.ServerOption
	DialOptions   []grpc.DialOption
	// EventSink is the address of the backend's jisr.events.v1.EventSink,
	// to which StartEvents delivers the member's events (docs/events.md);
	// plaintext on loopback only, else BackendTLS. EventAckWait is how long
	// the bus waits for an event's acknowledgement before delivering it
	// again after a crash (default 30s). EventInFlight is how many events
	// it delivers to the backend at once, at most one per citizen (default
	// DefaultEventInFlight; 1: one at a time).
	EventSink     string
	EventAckWait  time.Duration
	EventInFlight int
	// Registerer, when set, receives the provider side's hop latency
	// (jisr_adapter_provider_duration_seconds, by member: adapters of one
	// process may share it).
	Registerer prometheus.Registerer
}

type options struct {
	tp trace.TracerProvider
}

// Option configures New with an optional setting.
type Option func(*options)

// WithTracerProvider sends the adapter's bus spans to tp (default: the
// global provider, otel.GetTracerProvider(), as it is when New is called).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tp = tp }
}

// Adapter is one member's adapter.
type Adapter struct {
	cfg    Config
	fs     atomic.Pointer[fedState] // the federation version in force (reload.go)
	log    *slog.Logger
	health *health.Server

	backend *grpc.ClientConn // the first of backends: health checks
	// backends are the links to the backend, one per NATS connection:
	// requests take them in turn. One HTTP/2 connection serialises every
	// call's frames through its one writer, a point of contention on many
	// cores.
	backends    []*grpc.ClientConn
	nextBackend atomic.Uint32
	// fingerprint names the backend in answers to the gateway; seenBackends
	// is the last list of the member's backends the gateway sent, when it
	// named several (see noteBackends).
	fingerprint  string
	seenMu       sync.Mutex
	seenBackends string
	metrics      *telemetry.ProviderMetrics
	sub          *bus.Responder
	subs         []*bus.Responder // on MoreConns
	next         atomic.Uint32    // the consumer side's next connection
	sem          chan struct{}
	wg           sync.WaitGroup
	workers      *workers.Pool[request] // serve the provider requests (dispatchOn)
	events       *eventsLoop            // delivery to the backend's EventSink, when started
	eventsMu     sync.Mutex             // orders StartEvents' starts
	builtWith    map[string]bool        // the catalogue services GRPCServer registered
	microMu      sync.Mutex
	micro        micro.Service // its catalogue entry
	providing    bool          // StartProvider ran (under microMu)

	spanOpts []bus.SpanOption // the bus spans go to the adapter's provider

	// streamEvents holds a token per event of every PublishStream read
	// and not yet answered by the gateway (PublishStreamsInFlight).
	streamEvents chan struct{}
	// openStreams holds a token per open PublishStream (PublishStreamsOpen).
	openStreams chan struct{}
}

// New validates cfg and builds an adapter.
func New(cfg Config, opts ...Option) (*Adapter, error) {
	if cfg.Federation == nil || cfg.Keyer == nil || cfg.Conn == nil {
		return nil, fmt.Errorf("%w: Federation, Keyer and Conn are required", ErrConfig)
	}
	m, err := cfg.Federation.Member(cfg.Member)
	if err != nil {
		return nil, fmt.Errorf("%w: member %q is not in the federation file", ErrConfig, cfg.Member)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = bus.DefaultTimeout
	}
	if cfg.DescriptorSets == nil {
		cfg.DescriptorSets = cfg.Federation.Descriptors
	}
	svcs, err := descset.Services(cfg.Federation, cfg.DescriptorSets, cfg.Services)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	cat, err := catalog.New(cfg.Federation, svcs)
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
	a := &Adapter{
		spanOpts:     []bus.SpanOption{bus.WithTracerProvider(o.tp)},
		cfg:          cfg,
		log:          cfg.Log.With("component", "adapter", "member", cfg.Member),
		health:       health.NewServer(),
		sem:          make(chan struct{}, cfg.MaxInFlight),
		streamEvents: make(chan struct{}, PublishStreamsInFlight),
		openStreams:  make(chan struct{}, PublishStreamsOpen),
	}
	a.workers = workers.New(workerIdle, a.handle)
	a.fs.Store(&fedState{fed: cfg.Federation, member: m, cat: cat})
	if cfg.Registerer != nil {
		if a.metrics, err = telemetry.NewProviderMetrics(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("%w: metrics: %v", ErrConfig, err)
		}
	}
	return a, nil
}

// GRPCServer builds the consumer side: every federation service with a
// generic handler, plus health and reflection.
func (a *Adapter) GRPCServer(extra ...grpc.ServerOption) *grpc.Server {
	// Handlers run on a pool of long-lived goroutines whose stacks have
	// grown already, not on a fresh goroutine per call (see workers).
	// A call waits on the bus for the whole round trip: enough workers for
	// the calls in flight at c=128 on two cores (at most 512, c=512 on
	// eight cores or more); a call finding every worker busy gets a
	// goroutine of its own.
	opts := append([]grpc.ServerOption{grpc.ForceServerCodecV2(newCodec()), grpc.UnknownServiceHandler(a.laterMethod),
		grpc.NumStreamWorkers(uint32(min(64*runtime.GOMAXPROCS(0), 512)))}, a.cfg.ServerOptions...)
	s := grpc.NewServer(append(opts, extra...)...)
	cat := a.fs.Load().cat
	a.builtWith = map[string]bool{}
	for _, sd := range cat.Services() {
		a.builtWith[string(sd.FullName())] = true
		desc := &grpc.ServiceDesc{
			ServiceName: string(sd.FullName()),
			HandlerType: (*any)(nil),
			Metadata:    sd.ParentFile().Path(),
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			m, err := cat.ByFullMethod("/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(i).Name()))
			if err != nil {
				continue
			}
			desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: m.Name, Handler: a.consumerHandler(m.FullMethod)})
		}
		s.RegisterService(desc, struct{}{})
		a.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	a.registerConsentRequests(s)
	// Life events: the backend publishes the member's events here.
	eventsv1.RegisterEventPublisherServer(s, publisher{a: a})
	a.health.SetServingStatus(eventsv1.EventPublisher_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, a.health)
	a.registerReflection(s)
	return s
}

// consumerHandler serves one method of the federation version the server
// was built with; each call looks the method up in the version in force, so
// a method a later version removed is refused (reload.go).
func (a *Adapter) consumerHandler(fullMethod string) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		m, err := a.fs.Load().cat.ByFullMethod(fullMethod)
		if err != nil {
			return nil, unknownMethod(nil, nil)
		}
		c := new(consumerCall)
		if err := dec(&c.in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return a.consume(ctx, m, c)
		}
		c.info = grpc.UnaryServerInfo{Server: srv, FullMethod: m.FullMethod}
		return interceptor(ctx, &c.in, &c.info, func(ctx context.Context, _ any) (any, error) {
			return a.consume(ctx, m, c)
		})
	}
}

// consumerCall is what one call of the consumer side needs, in one
// allocation: the request and the reply, the query and its header's values
// (purpose, consent).
type consumerCall struct {
	in, out frame
	msg     nats.Msg
	vals    [2]string
	info    grpc.UnaryServerInfo
}

// consume sends one backend call to the gateway and returns its reply.
func (a *Adapter) consume(ctx context.Context, m *catalog.Method, c *consumerCall) (*frame, error) {
	in := &c.in
	raw, err := requestEID(m, in.b)
	switch {
	case errors.Is(err, catalog.ErrNoEID):
		return nil, refusal.Error(codes.InvalidArgument, refusal.ReasonBadEID, "the request has no eID in field %q", m.EID.Name())
	case err != nil:
		return nil, refusal.Error(codes.InvalidArgument, refusal.ReasonMalformedPayload, "the request is not a valid %s", m.Input.Descriptor().FullName())
	}
	fed := a.fs.Load().fed
	eid, err := fed.NormaliseEID(raw)
	if err != nil {
		return nil, refusal.Error(codes.InvalidArgument, refusal.ReasonBadEID, "the eID in field %q does not match the federation's eID format (%s)", m.EID.Name(), fed.EID)
	}
	provider, err := a.provider(fed, m, incoming(ctx, bus.MetadataProvider))
	if err != nil {
		return nil, err
	}
	subj, err := subject.Query{
		Consumer: a.cfg.Member, Provider: provider, Service: m.ServiceToken, Method: m.Name,
		CKey: a.cfg.Keyer.CKey(eid),
	}.Subject()
	if err != nil {
		return nil, refusal.Error(codes.Internal, refusal.ReasonAdapterInternal, "could not build the query subject")
	}
	// The header holds purpose and consent, and the timeout and trace
	// context bus.Call adds.
	vals := c.vals[:]
	msg := &c.msg
	msg.Subject, msg.Data, msg.Header = subj, in.b, make(nats.Header, 4)
	if p := incoming(ctx, bus.MetadataPurpose); p != "" {
		vals[0] = p
		msg.Header[bus.HeaderPurpose] = vals[0:1:1]
	}
	if t := incoming(ctx, bus.MetadataConsent); t != "" {
		vals[1] = t
		msg.Header[bus.HeaderConsent] = vals[1:2:2]
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.DefaultTimeout)
		defer cancel()
	}
	reply, err := bus.Call(ctx, a.queryConn(), msg, a.spanOpts...)
	if err != nil {
		return nil, transportRefusal(err)
	}
	c.out.b = reply.Data
	return &c.out, nil
}

func (a *Adapter) provider(fed *federation.Federation, m *catalog.Method, asked string) (string, error) {
	if asked != "" {
		if fed.Provides(asked, m.Service) {
			return asked, nil
		}
		return "", refusal.Error(codes.NotFound, refusal.ReasonUnknownProvider, "member %q named in jisr-provider does not provide %s (providers: %s)", asked, m.Service, providerNames(fed.Providers(m.Service)))
	}
	providers := fed.Providers(m.Service)
	switch len(providers) {
	case 0:
		return "", refusal.Error(codes.NotFound, refusal.ReasonUnknownProvider, "no member of the federation provides %s", m.Service)
	case 1:
		return providers[0].Name, nil
	default:
		return "", refusal.Error(codes.InvalidArgument, refusal.ReasonProviderAmbiguous, "several members provide %s (%s): name one in jisr-provider metadata", m.Service, providerNames(providers))
	}
}

// incoming is the first value of the call's metadata key (lower case), read
// without copying the whole metadata as metadata.FromIncomingContext does.
func incoming(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// gatewayIdentity names the gateway's inbox (_INBOX.gateway.…), the only
// reply subject a provider answers on.
const gatewayIdentity = "gateway"

// StartProvider connects to the backend and starts taking the gateway's
// requests for this member's services.
func (a *Adapter) StartProvider(ctx context.Context) error {
	if len(a.fs.Load().member.Provides) == 0 {
		return ErrProviderNotAllowed
	}
	if a.cfg.Backend == "" {
		return fmt.Errorf("%w: the provider side needs a backend address", ErrConfig)
	}
	// Deliberate exception: the backend link is the adapter's local side
	// (sidecar on the same host), so plaintext is confined to loopback.
	creds, err := loopback.ClientCredentials(a.cfg.Backend, a.cfg.BackendTLS)
	if err != nil {
		return ErrPlaintextNotLocal
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(newCodec())),
	}, a.cfg.DialOptions...)
	// The links are made once: a StartProvider that failed below and is
	// tried again with a later version keeps them (requests taken before
	// the failure may still be using them; Stop closes them).
	if a.backends == nil {
		links := make([]*grpc.ClientConn, 1+len(a.cfg.MoreConns))
		for i := range links {
			if links[i], err = grpc.NewClient(a.cfg.Backend, opts...); err != nil {
				for _, c := range links[:i] {
					_ = c.Close()
				}
				return fmt.Errorf("adapter: backend %s: %w", a.cfg.Backend, err)
			}
		}
		a.microMu.Lock() // Ready reads the backend link (the side may start late: a later version)
		a.backend, a.backends = links[0], links
		a.fingerprint = bus.BackendFingerprint(a.cfg.Backend)
		a.microMu.Unlock()
	}
	// A failure below ends the subscriptions made, so that a later
	// version's StartProvider starts them afresh.
	var subs []*bus.Responder
	fail := func(err error) error {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
		a.sub, a.subs = nil, nil
		return err
	}
	// bus.QueueSubscribe: a reconnection with a renewed SVID pauses it and
	// answers the requests received first (only this connection may).
	for _, nc := range append([]*nats.Conn{a.cfg.Conn}, a.cfg.MoreConns...) {
		s, err := bus.QueueSubscribe(nc, subject.ProviderQueries(a.cfg.Member), subject.ProviderQueue(a.cfg.Member), a.dispatchOn(nc), 1<<16, 256<<20)
		if err != nil {
			return fail(fmt.Errorf("adapter: subscribe: %w", err))
		}
		subs = append(subs, s)
		if err := bus.Flush(ctx, nc); err != nil {
			return fail(fmt.Errorf("adapter: subscribe: %w", err))
		}
	}
	a.sub, a.subs = subs[0], subs[1:]
	if err := a.register(a.fs.Load(), true); err != nil {
		return fail(fmt.Errorf("adapter: %w", err))
	}
	a.log.Info("provider side ready", "subject", subject.ProviderQueries(a.cfg.Member), "backend", a.cfg.Backend, "backend_fingerprint", a.fingerprint)
	return nil
}

// queryConn is the connection the consumer side sends its next query on:
// Conn and MoreConns in turn.
func (a *Adapter) queryConn() *nats.Conn {
	if len(a.cfg.MoreConns) == 0 {
		return a.cfg.Conn
	}
	i := int(a.next.Add(1) % uint32(len(a.cfg.MoreConns)+1))
	if i == 0 {
		return a.cfg.Conn
	}
	return a.cfg.MoreConns[i-1]
}

// dispatchOn handles the requests received on nc. Each is counted in on nc
// until answered (bus.Serving): a planned reconnection of nc (a renewed
// SVID) waits for the answer, which only this connection may send.
//
// An idle worker takes the request; when none is idle, a new worker starts
// with it (at most MaxInFlight serve at once). A worker idle for
// workerIdle ends. The workers' stacks have grown already through the
// backend call: a fresh goroutine per request grows its stack anew each
// time (runtime.newstack/copystack).
func (a *Adapter) dispatchOn(nc *nats.Conn) nats.MsgHandler {
	return func(msg *nats.Msg) {
		r := request{msg: msg, done: bus.Serving(nc)}
		a.sem <- struct{}{}
		a.wg.Add(1)
		a.workers.Go(r)
	}
}

// request is one request of the gateway, and what ends its count on the
// connection it came on.
type request struct {
	msg  *nats.Msg
	done func()
}

// workerIdle is how long a provider worker waits for its next request (a
// variable for the test that has workers end between requests; an adapter
// reads it once, in New).
var workerIdle = 2 * time.Second

func (a *Adapter) handle(r request) {
	defer func() { <-a.sem; a.wg.Done(); r.done() }()
	a.serve(r.msg)
}

// serve calls the backend for one request from the gateway.
func (a *Adapter) serve(msg *nats.Msg) {
	// Only the gateway asks a provider, and it asks from its own inbox: a
	// request with any other reply subject is dropped before the backend is
	// called, so the adapter never publishes where someone else chose.
	if err := bus.ReplyTo(msg, gatewayIdentity); err != nil {
		a.log.Warn("provider request dropped unanswered: its reply subject is not the gateway's inbox", "subject", msg.Subject)
		return
	}
	q, err := subject.ParseProvider(msg.Subject)
	if err != nil || q.Provider != a.cfg.Member {
		_ = bus.RespondError(msg, refusal.Error(codes.InvalidArgument, refusal.ReasonBadSubject, "malformed provider subject: expected jisr.p.%s.<service>.<method>.<ckey>", a.cfg.Member))
		return
	}
	st := a.fs.Load()
	m, err := st.cat.Lookup(q.Service, q.Method)
	if err == nil && !st.fed.Provides(a.cfg.Member, m.Service) {
		err = catalog.ErrUnknownMethod // a service this member no longer provides
	}
	if err != nil {
		_ = bus.RespondError(msg, refusal.Error(codes.Unimplemented, refusal.ReasonUnknownMethod, "this adapter does not serve that service or method"))
		return
	}
	start := time.Now()
	timeout := bus.Timeout(msg.Header, a.cfg.DefaultTimeout, 0)
	ctx, cancel := context.WithTimeout(bus.ExtractTrace(context.Background(), msg.Header), timeout)
	defer cancel()
	ctx, span := bus.StartSpan(ctx, "process", msg.Subject, trace.SpanKindServer, len(msg.Data), a.spanOpts...)
	defer span.End()
	code := codes.OK
	defer func() { a.metrics.Observe(a.cfg.Member, m.Service, m.Name, code, time.Since(start)) }()
	if seen := msg.Header.Get(bus.HeaderBackends); seen != "" {
		a.noteBackends(seen)
	}
	ctx = metadata.AppendToOutgoingContext(ctx,
		bus.MetadataConsumer, msg.Header.Get(bus.HeaderConsumer),
		bus.MetadataPurpose, msg.Header.Get(bus.HeaderPurpose))
	in, _, err := knownFields(m.Input, msg.Data)
	if err != nil {
		code = codes.InvalidArgument
		_ = bus.RespondError(msg, refusal.Error(codes.InvalidArgument, refusal.ReasonMalformedPayload, "the request is not a valid %s", m.Input.Descriptor().FullName()))
		return
	}
	call := new([2]frame) // the request and the reply, in one allocation
	call[0].b = in
	out := &call[1]
	backend := a.backends[a.nextBackend.Add(1)%uint32(len(a.backends))]
	if err := backend.Invoke(ctx, m.FullMethod, &call[0], out); err != nil {
		st := status.Convert(err)
		if ctx.Err() != nil && st.Code() == codes.Unknown {
			st = status.New(codes.DeadlineExceeded, "the backend did not answer before the deadline")
		}
		span.SetStatus(otelcodes.Error, st.Code().String())
		code = st.Code()
		if err := bus.RespondFromBackend(msg, nil, st, a.fingerprint); err != nil {
			a.log.WarnContext(ctx, "reply not sent", "err", err)
		}
		return
	}
	reply, n, err := knownFields(m.Output, out.b)
	if err != nil {
		code = codes.Internal
		_ = bus.RespondError(msg, refusal.Error(codes.Internal, refusal.ReasonBackendReplyInvalid, "the backend's reply is not a valid %s", m.Output.Descriptor().FullName()))
		return
	}
	if n > 0 {
		a.log.WarnContext(ctx, "backend reply carried unknown fields: dropped", "method", m.Name, "fields", n)
	}
	if err := bus.RespondFromBackend(msg, reply, nil, a.fingerprint); err != nil {
		a.log.WarnContext(ctx, "reply not sent", "err", err)
	}
}

// knownFields re-encodes a payload with only the fields its descriptor
// knows (and the enum values their enums define), at every level, and
// says how many others it dropped. The gateway
// does the same at the boundary; the provider side does it too, so that a
// backend's extra fields never even reach the bus (defence in depth).
//
// A payload with no unknown field (the usual case) is recognised on the
// wire bytes (wireClean) and passed through as it came, without decoding.
func knownFields(mt protoreflect.MessageType, b []byte) ([]byte, int, error) {
	if wireClean(mt.Descriptor(), b, 0) {
		return b, 0, nil
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(b, msg); err != nil {
		return nil, 0, err
	}
	n := unknownfields.Drop(msg.ProtoReflect())
	if n == 0 {
		return b, 0, nil
	}
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	return out, n, err
}

// Stop stops the provider side and waits, until ctx ends, for requests in flight.
func (a *Adapter) Stop(ctx context.Context) error {
	a.health.Shutdown()
	for _, s := range a.subs {
		_ = s.Unsubscribe()
	}
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	a.eventsMu.Lock()
	if a.events != nil {
		a.events.stop() // stays set: a later version starts no other
	}
	a.eventsMu.Unlock()
	a.microMu.Lock()
	a.providing = false
	if a.micro != nil {
		_ = a.micro.Stop()
		a.micro = nil
	}
	a.microMu.Unlock()
	done := make(chan struct{})
	go func() { a.wg.Wait(); a.workers.Close(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("adapter: requests still in flight: %w", ctx.Err())
	}
	for _, c := range a.backends {
		_ = c.Close()
	}
	return err
}

// transportRefusal gives a reason to an error of the bus itself (no gateway
// answered): a refusal from the gateway already carries its own.
func transportRefusal(err error) error {
	if refusal.Of(err) != "" {
		return err
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable:
		return refusal.Error(codes.Unavailable, refusal.ReasonGatewayUnavailable, "no gateway answered: %s (is the gateway running and connected to NATS?)", st.Message())
	case codes.DeadlineExceeded:
		return refusal.Error(codes.DeadlineExceeded, refusal.ReasonGatewayTimeout, "no answer before the call's deadline")
	case codes.InvalidArgument: // over the bus's maximum payload
		return refusal.Error(codes.InvalidArgument, refusal.ReasonRequestTooLarge, "%s", st.Message())
	case codes.PermissionDenied:
		return refusal.Error(codes.PermissionDenied, refusal.ReasonAdapterInternal, "%s: this adapter's identity may not publish the query (check the federation file the NATS server was given)", st.Message())
	}
	return err
}

func providerNames(ms []*federation.Member) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// noteBackends reads the gateway's list of the backends that answer for
// this member (Jisr-Backends, sent only when there are several): another
// adapter of the member, in the same queue group, calls another backend and
// takes part of the traffic. It warns once per list and sets
// jisr_adapter_queue_group_backends.
func (a *Adapter) noteBackends(seen string) {
	fps := strings.Split(seen, ",")
	a.metrics.Backends(a.cfg.Member, len(fps))
	a.seenMu.Lock()
	changed := seen != a.seenBackends
	a.seenBackends = seen
	a.seenMu.Unlock()
	if changed && len(fps) > 1 {
		a.log.Warn("another adapter of this member calls a different backend and shares this member's queue group: the gateway's queries are split between the backends",
			"member", a.cfg.Member, "backend", a.cfg.Backend, "backend_fingerprint", a.fingerprint, "backends_seen", seen)
	}
}

// unknownMethod answers a call of a service or method the federation does
// not have (the gRPC server's own answer would carry no ErrorInfo).
func unknownMethod(_ any, _ grpc.ServerStream) error {
	return refusal.Error(codes.Unimplemented, refusal.ReasonUnknownMethod,
		"no service of the federation has this method (`grpcurl -plaintext <adapter> list` shows the services this adapter serves)")
}
