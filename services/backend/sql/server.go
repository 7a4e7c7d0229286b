package sql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	v1reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	v1alphareflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/jisr-bus/jisr/bus/loopback"
)

type options struct {
	server []grpc.ServerOption
	tls    *tls.Config
	tp     trace.TracerProvider
	log    *slog.Logger
}

// Option configures New.
type Option func(*options)

// WithServerOptions adds gRPC server options (stats handlers for tracing).
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.server = append(o.server, opts...) }
}

// WithTLS serves mTLS with this configuration (svid.ServerTLS with the
// member's SVID, authorising the member's adapter): required off loopback.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// WithTracerProvider sends the "store.lookup" spans to tp (default: the
// global provider when New is called).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// Backend is a running SQL backend.
type Backend struct {
	cfg     *Config
	pool    *pgxpool.Pool
	srv     *grpc.Server
	health  *health.Server
	tls     bool
	log     *slog.Logger
	tracer  trace.Tracer
	methods map[string]*method
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// New resolves the mapping against the service's descriptors, opens the
// pool, prepares every query to check it against the database, and builds
// the gRPC server. A mapping that does not fit stops here, naming the field.
func New(ctx context.Context, cfg *Config, opts ...Option) (*Backend, error) {
	o := options{log: slog.Default()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.tp == nil {
		o.tp = otel.GetTracerProvider()
	}
	files, types, err := cfg.descriptors()
	if err != nil {
		return nil, err
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(cfg.Service))
	if err != nil {
		return nil, fmt.Errorf("%w: service %s: no descriptor (linked into jisr or in descriptor_set): %v", ErrConfig, cfg.Service, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%w: service %s is not a service", ErrConfig, cfg.Service)
	}
	b := &Backend{cfg: cfg, log: o.log.With("member", cfg.Member), tracer: o.tp.Tracer(tracerScope), methods: map[string]*method{}, tls: o.tls != nil}
	for _, name := range sortedKeys(cfg.Methods) {
		m, err := compile(sd, name, cfg.Methods[name], types)
		if err != nil {
			return nil, err
		}
		b.methods[name] = m
	}
	if b.pool, err = openPool(ctx, cfg); err != nil {
		return nil, err
	}
	if err := b.prepare(ctx); err != nil {
		b.pool.Close()
		return nil, err
	}
	for i := 0; i < sd.Methods().Len(); i++ {
		if name := string(sd.Methods().Get(i).Name()); b.methods[name] == nil {
			b.log.Warn("method not mapped: it answers Unimplemented", "method", name)
		}
	}
	sopts := append([]grpc.ServerOption{}, o.server...)
	if o.tls != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	b.srv = grpc.NewServer(sopts...)
	b.srv.RegisterService(b.serviceDesc(), nil)
	b.health = health.NewServer()
	healthpb.RegisterHealthServer(b.srv, b.health)
	ropts := reflection.ServerOptions{Services: b.srv, DescriptorResolver: files, ExtensionResolver: protoregistry.GlobalTypes}
	v1reflectiongrpc.RegisterServerReflectionServer(b.srv, reflection.NewServerV1(ropts))
	v1alphareflectiongrpc.RegisterServerReflectionServer(b.srv, reflection.NewServer(ropts))
	b.setServing(true)
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	b.stop = cancel
	b.wg.Add(1)
	go b.watchHealth(hctx)
	return b, nil
}

// descriptors returns where the service's descriptors come from: the
// descriptor set the mapping names, or what is linked into jisr.
func (c *Config) descriptors() (interface {
	protodesc.Resolver
	FindDescriptorByName(protoreflect.FullName) (protoreflect.Descriptor, error)
}, func(protoreflect.MessageDescriptor) protoreflect.MessageType, error) {
	linked := func(md protoreflect.MessageDescriptor) protoreflect.MessageType {
		if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil && mt.Descriptor() == md {
			return mt
		}
		return dynamicpb.NewMessageType(md)
	}
	if c.DescriptorSet == "" {
		return protoregistry.GlobalFiles, linked, nil
	}
	p := c.DescriptorSet
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.dir, p)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: descriptor_set: %v", ErrConfig, err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		return nil, nil, fmt.Errorf("%w: descriptor_set %s: %v", ErrConfig, p, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: descriptor_set %s: %v", ErrConfig, p, err)
	}
	return files, func(md protoreflect.MessageDescriptor) protoreflect.MessageType { return dynamicpb.NewMessageType(md) }, nil
}

func dirOf(p string) string { return filepath.Dir(p) }

// openPool opens the pgx pool: every session read-only, with the
// statement timeout set in the server.
func openPool(ctx context.Context, cfg *Config) (*pgxpool.Pool, error) {
	url, err := cfg.Database.url()
	if err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL and its password: name the field only.
		return nil, fmt.Errorf("%w: database.url does not parse as a PostgreSQL connection string", ErrConfig)
	}
	pc.MaxConns = cfg.Database.MaxConns
	rp := pc.ConnConfig.RuntimeParams
	rp["statement_timeout"] = strconv.FormatInt(time.Duration(cfg.Database.StatementTimeout).Milliseconds(), 10)
	rp["default_transaction_read_only"] = "on"
	if rp["application_name"] == "" {
		rp["application_name"] = "jisr-backend-sql/" + cfg.Member
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("sql backend %s: %w", cfg.Member, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("sql backend %s: database: %w", cfg.Member, err)
	}
	return pool, nil
}

// prepare describes every statement to the database and checks it against
// its mapping.
func (b *Backend) prepare(ctx context.Context) error {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("sql backend %s: database: %w", b.cfg.Member, err)
	}
	defer conn.Release()
	for _, name := range sortedKeys(b.methods) {
		m := b.methods[name]
		sd, err := conn.Conn().PgConn().Prepare(ctx, "", m.sql, nil)
		if err != nil {
			return fmt.Errorf("%w: methods.%s: the database refuses the query: %v", ErrConfig, name, err)
		}
		if err := m.checkPrepared(sd); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) serviceDesc() *grpc.ServiceDesc {
	sd := &grpc.ServiceDesc{ServiceName: b.cfg.Service, HandlerType: (*any)(nil), Metadata: b.cfg.Service}
	for _, name := range sortedKeys(b.methods) {
		m := b.methods[name]
		sd.Methods = append(sd.Methods, grpc.MethodDesc{
			MethodName: name,
			Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
				req := m.in.New().Interface()
				if err := dec(req); err != nil {
					return nil, err
				}
				if ic == nil {
					return b.call(ctx, m, req)
				}
				return ic(ctx, req, &grpc.UnaryServerInfo{FullMethod: m.full}, func(ctx context.Context, req any) (any, error) {
					return b.call(ctx, m, req.(proto.Message))
				})
			},
		})
	}
	return sd
}

// call runs one method's query and builds the reply.
func (b *Backend) call(ctx context.Context, m *method, req proto.Message) (proto.Message, error) {
	r := req.ProtoReflect()
	if eid := r.Get(m.eid).String(); eid == "" || len(eid) > 64 {
		return nil, status.Error(codes.InvalidArgument, "eid is required")
	}
	args := make([]any, len(m.params))
	for i, p := range m.params {
		args[i] = param(r, p)
	}
	ctx, span := b.tracer.Start(ctx, "store.lookup", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("db.system.name", "postgresql"),
		attribute.String("db.operation.name", "SELECT"),
		attribute.String("rpc.method", m.name),
	))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(b.cfg.Database.StatementTimeout)+time.Second)
	defer cancel()
	reply, err := b.query(ctx, m, args)
	if err != nil {
		span.SetStatus(otelcodes.Error, status.Code(err).String())
		return nil, err
	}
	return reply, nil
}

func (b *Backend) query(ctx context.Context, m *method, args []any) (proto.Message, error) {
	rows, err := b.pool.Query(ctx, m.sql, args...)
	if err != nil {
		return nil, b.dbError(m, err)
	}
	defer rows.Close()
	reply := m.out.New()
	n := 0
	for rows.Next() {
		if n > 0 && m.anchor == nil {
			b.log.Error("query answered more than one row for a reply without a repeated field", "method", m.name)
			return nil, status.Error(codes.Internal, b.cfg.Register+" mapping error")
		}
		values, err := rows.Values()
		if err != nil {
			return nil, b.dbError(m, err)
		}
		if err := m.fill(reply, values, n == 0); err != nil {
			b.log.Error("row does not fit the reply", "method", m.name, "err", err)
			return nil, status.Error(codes.Internal, b.cfg.Register+" mapping error")
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, b.dbError(m, err)
	}
	if n == 0 {
		return nil, status.Error(codes.NotFound, "no record for this request in the "+b.cfg.Register)
	}
	return reply.Interface(), nil
}

// dbError maps a database error to a status that carries neither the query's
// parameters nor the database's message.
func (b *Backend) dbError(m *method, err error) error {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "57014", errors.Is(err, context.DeadlineExceeded):
		b.log.Warn("query timed out", "method", m.name)
		return status.Error(codes.DeadlineExceeded, b.cfg.Register+" query timed out")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.As(err, &pe):
		b.log.Error("query failed", "method", m.name, "sqlstate", pe.Code)
		return status.Error(codes.Internal, b.cfg.Register+" database error")
	case errors.Is(err, pgx.ErrNoRows):
		return status.Error(codes.NotFound, "no record for this request in the "+b.cfg.Register)
	}
	b.log.Error("database unavailable", "method", m.name, "err", err)
	return status.Error(codes.Unavailable, b.cfg.Register+" database unavailable")
}

// watchHealth pings the pool: NOT_SERVING while the database does not answer.
func (b *Backend) watchHealth(ctx context.Context) {
	defer b.wg.Done()
	every := time.Duration(b.cfg.Database.HealthInterval)
	t := time.NewTicker(every)
	defer t.Stop()
	serving := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		err := b.pool.Ping(pctx)
		cancel()
		if ok := err == nil; ok != serving && ctx.Err() == nil {
			serving = ok
			b.setServing(ok)
			if ok {
				b.log.Info("database answers again: serving")
			} else {
				b.log.Warn("database does not answer: not serving", "err", err)
			}
		}
	}
}

func (b *Backend) setServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	b.health.SetServingStatus("", st)
	b.health.SetServingStatus(b.cfg.Service, st)
}

// Listen listens on addr, refusing a non-loopback address without TLS.
func (b *Backend) Listen(addr string) (net.Listener, error) {
	if !b.tls && !loopback.Is(addr) {
		return nil, ErrPlaintextNotLocal
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sql backend: %w", err)
	}
	return lis, nil
}

// Serve serves gRPC on lis until Stop.
func (b *Backend) Serve(lis net.Listener) error {
	if !b.tls && !loopback.Is(lis.Addr().String()) {
		return ErrPlaintextNotLocal
	}
	err := b.srv.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop stops gracefully, forcing at ctx's end, then closes the pool.
func (b *Backend) Stop(ctx context.Context) error {
	b.stop()
	b.wg.Wait()
	b.health.Shutdown()
	done := make(chan struct{})
	go func() { b.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		b.srv.Stop()
	}
	b.pool.Close()
	return nil
}

// Service is the full name of the service served.
func (b *Backend) Service() string { return b.cfg.Service }

const tracerScope = "github.com/jisr-bus/jisr/services/backend/sql"

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
