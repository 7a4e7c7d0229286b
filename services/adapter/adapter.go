package adapter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/proto/services"
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
	Log        *slog.Logger
	// Services are the descriptors of the services the federation may name
	// (default services.All(): every ministry service linked into jisr).
	Services []protoreflect.ServiceDescriptor
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
	member *federation.Member
	cat    *catalog.Catalog
	log    *slog.Logger
	health *health.Server

	backend *grpc.ClientConn
	metrics *telemetry.ProviderMetrics
	sub     *nats.Subscription
	micro   micro.Service // its catalogue entry
	sem     chan struct{}
	wg      sync.WaitGroup

	spanOpts []bus.SpanOption // the bus spans go to the adapter's provider
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
	if cfg.Services == nil {
		cfg.Services = services.All()
	}
	cat, err := catalog.New(cfg.Federation, cfg.Services)
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
		spanOpts: []bus.SpanOption{bus.WithTracerProvider(o.tp)},
		cfg:      cfg, member: m, cat: cat,
		log:    cfg.Log.With("component", "adapter", "member", cfg.Member),
		health: health.NewServer(),
		sem:    make(chan struct{}, cfg.MaxInFlight),
	}
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
	opts := append([]grpc.ServerOption{grpc.ForceServerCodecV2(newCodec())}, a.cfg.ServerOptions...)
	s := grpc.NewServer(append(opts, extra...)...)
	for _, sd := range a.cat.Services() {
		desc := &grpc.ServiceDesc{
			ServiceName: string(sd.FullName()),
			HandlerType: (*any)(nil),
			Metadata:    sd.ParentFile().Path(),
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			m, err := a.cat.ByFullMethod("/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(i).Name()))
			if err != nil {
				continue
			}
			desc.Methods = append(desc.Methods, grpc.MethodDesc{MethodName: m.Name, Handler: a.consumerHandler(m)})
		}
		s.RegisterService(desc, struct{}{})
		a.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s, a.health)
	a.registerReflection(s)
	return s
}

func (a *Adapter) consumerHandler(m *catalog.Method) grpc.MethodHandler {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := new(frame)
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return a.consume(ctx, m, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: m.FullMethod}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return a.consume(ctx, m, req.(*frame))
		})
	}
}

// consume sends one backend call to the gateway and returns its reply.
func (a *Adapter) consume(ctx context.Context, m *catalog.Method, in *frame) (*frame, error) {
	_, raw, err := m.Decode(in.b)
	switch {
	case errors.Is(err, catalog.ErrNoEID):
		return nil, status.Errorf(codes.InvalidArgument, "the request has no eID in field %q", m.EID.Name())
	case err != nil:
		return nil, status.Errorf(codes.InvalidArgument, "the request is not a valid %s", m.Input.Descriptor().FullName())
	}
	eid, err := a.cfg.Federation.NormaliseEID(raw)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the eID in field %q does not match the federation's eID format", m.EID.Name())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	provider, err := a.provider(m, first(md, bus.MetadataProvider))
	if err != nil {
		return nil, err
	}
	subj, err := subject.Query{
		Consumer: a.cfg.Member, Provider: provider, Service: m.ServiceToken, Method: m.Name,
		CKey: a.cfg.Keyer.CKey(eid),
	}.Subject()
	if err != nil {
		return nil, status.Error(codes.Internal, "could not build the query subject")
	}
	msg := &nats.Msg{Subject: subj, Data: in.b, Header: nats.Header{}}
	if p := first(md, bus.MetadataPurpose); p != "" {
		msg.Header.Set(bus.HeaderPurpose, p)
	}
	if t := first(md, bus.MetadataConsent); t != "" {
		msg.Header.Set(bus.HeaderConsent, t)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.DefaultTimeout)
		defer cancel()
	}
	reply, err := bus.Call(ctx, a.cfg.Conn, msg, a.spanOpts...)
	if err != nil {
		return nil, err
	}
	return &frame{b: reply.Data}, nil
}

func (a *Adapter) provider(m *catalog.Method, asked string) (string, error) {
	if asked != "" {
		if a.cfg.Federation.Provides(asked, m.Service) {
			return asked, nil
		}
		return "", status.Errorf(codes.NotFound, "no member named in jisr-provider provides %s", m.Service)
	}
	providers := a.cfg.Federation.Providers(m.Service)
	switch len(providers) {
	case 0:
		return "", status.Errorf(codes.NotFound, "no member provides %s", m.Service)
	case 1:
		return providers[0].Name, nil
	default:
		return "", status.Errorf(codes.InvalidArgument, "several members provide %s: name one in jisr-provider metadata", m.Service)
	}
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
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
	if len(a.member.Provides) == 0 {
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
	conn, err := grpc.NewClient(a.cfg.Backend, opts...)
	if err != nil {
		return fmt.Errorf("adapter: backend %s: %w", a.cfg.Backend, err)
	}
	a.backend = conn
	sub, err := a.cfg.Conn.QueueSubscribe(subject.ProviderQueries(a.cfg.Member), subject.ProviderQueue(a.cfg.Member), a.dispatch)
	if err != nil {
		return fmt.Errorf("adapter: subscribe: %w", err)
	}
	if err := sub.SetPendingLimits(1<<16, 256<<20); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	if err := bus.Flush(ctx, a.cfg.Conn); err != nil {
		return fmt.Errorf("adapter: subscribe: %w", err)
	}
	a.sub = sub
	if a.micro, err = a.cat.Register(a.cfg.Conn, a.cfg.Federation, a.cfg.Member); err != nil {
		return fmt.Errorf("adapter: %w", err)
	}
	a.log.Info("provider side ready", "subject", subject.ProviderQueries(a.cfg.Member), "backend", a.cfg.Backend)
	return nil
}

func (a *Adapter) dispatch(msg *nats.Msg) {
	a.sem <- struct{}{}
	a.wg.Add(1)
	go func() {
		defer func() { <-a.sem; a.wg.Done() }()
		a.serve(msg)
	}()
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
		_ = bus.RespondError(msg, status.Error(codes.InvalidArgument, "malformed provider subject"))
		return
	}
	m, err := a.cat.Lookup(q.Service, q.Method)
	if err != nil {
		_ = bus.RespondError(msg, status.Error(codes.Unimplemented, "unknown service or method"))
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
	ctx = metadata.AppendToOutgoingContext(ctx,
		bus.MetadataConsumer, msg.Header.Get(bus.HeaderConsumer),
		bus.MetadataPurpose, msg.Header.Get(bus.HeaderPurpose))
	in, _, err := knownFields(m.Input, msg.Data)
	if err != nil {
		code = codes.InvalidArgument
		_ = bus.RespondError(msg, status.Errorf(codes.InvalidArgument, "the request is not a valid %s", m.Input.Descriptor().FullName()))
		return
	}
	out := new(frame)
	if err := a.backend.Invoke(ctx, m.FullMethod, &frame{b: in}, out); err != nil {
		st := status.Convert(err)
		if ctx.Err() != nil && st.Code() == codes.Unknown {
			st = status.New(codes.DeadlineExceeded, "the backend did not answer before the deadline")
		}
		span.SetStatus(otelcodes.Error, st.Code().String())
		code = st.Code()
		if err := bus.Respond(msg, nil, st); err != nil {
			a.log.WarnContext(ctx, "reply not sent", "err", err)
		}
		return
	}
	reply, n, err := knownFields(m.Output, out.b)
	if err != nil {
		code = codes.Internal
		_ = bus.RespondError(msg, status.Errorf(codes.Internal, "the backend's reply is not a valid %s", m.Output.Descriptor().FullName()))
		return
	}
	if n > 0 {
		a.log.WarnContext(ctx, "backend reply carried unknown fields: dropped", "method", m.Name, "fields", n)
	}
	if err := bus.Respond(msg, reply, nil); err != nil {
		a.log.WarnContext(ctx, "reply not sent", "err", err)
	}
}

// knownFields re-encodes a payload with only the fields its descriptor
// knows, at every level, and says how many others it dropped. The gateway
// does the same at the boundary; the provider side does it too, so that a
// backend's extra fields never even reach the bus (defence in depth).
func knownFields(mt protoreflect.MessageType, b []byte) ([]byte, int, error) {
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
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	if a.micro != nil {
		_ = a.micro.Stop()
	}
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("adapter: requests still in flight: %w", ctx.Err())
	}
	if a.backend != nil {
		_ = a.backend.Close()
	}
	return err
}
