package gateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/bus/telemetry"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	"github.com/jisr-bus/jisr/gateway/notify"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// discard is an AuditLog that keeps nothing: the benchmark measures the
// gateway's decision path, not an audit store (package audit has its own).
type discard struct{}

func (discard) Append(context.Context, *decision.Decision) error { return nil }

// BenchmarkAllowedQuery is one allowed, consented, minimised query through
// real NATS, the gateway and an in-process provider, at the log level a
// deployment runs (info). allocs/op counts the whole process: caller,
// gateway and provider.
func BenchmarkAllowedQuery(b *testing.B) {
	env := bustest.Start(b)
	call := allowedQuery(b, env, discard{})
	b.ReportAllocs()
	for b.Loop() {
		call()
	}
}

// BenchmarkTracedQuery is BenchmarkAllowedQuery with the gateway's spans
// recorded, as the gateway process records them (every query sampled, kept
// in the in-memory span store): the cost of tracing per query.
func BenchmarkTracedQuery(b *testing.B) {
	tel, err := telemetry.Setup(b.Context(), telemetry.WithEndpoint("none"), telemetry.WithMemorySpans(1000))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	env := bustest.Start(b)
	call := allowedQuery(b, env, discard{}, gateway.WithTracerProvider(tel.TracerProvider))
	b.ReportAllocs()
	for b.Loop() {
		call()
	}
}

// BenchmarkTracing is BenchmarkAllowedQuery from 64 callers at once with
// the gateway's tracing as the gateway process sets it up (telemetry.Setup
// with its default in-memory span store of 10,000 spans, nothing exported,
// the default sampler: every query recorded) and without (tracing=off: the
// no-op provider of a process that records nothing). tracing=linked is
// tracing=on with a caller that records its own span, so that every query
// arrives with a traceparent the gateway links, as in jisr dev.
// Everything runs in this process, NATS included: cpu-ns/op (the process's
// CPU per query) and allocs/op of on less off are tracing's whole cost per
// query, the NATS server's included.
func BenchmarkTracing(b *testing.B) {
	for _, mode := range []string{"off", "on", "linked"} {
		b.Run("tracing="+mode, func(b *testing.B) {
			var opts []gateway.Option
			// The caller records nothing (an adapter without --otlp),
			// except for tracing=linked.
			callerOpts := []bus.SpanOption{bus.WithTracerProvider(noop.NewTracerProvider())}
			if mode != "off" {
				tel, err := telemetry.Setup(b.Context(), telemetry.WithServiceName("jisr-gateway"), telemetry.WithEndpoint("none"),
					telemetry.WithMemorySpans(10000), telemetry.WithInstanceID("gw-1"))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
				opts = append(opts, gateway.WithTracerProvider(tel.TracerProvider))
				if mode == "linked" {
					callerOpts = []bus.SpanOption{bus.WithTracerProvider(sdktrace.NewTracerProvider())}
				}
			} else {
				opts = append(opts, gateway.WithTracerProvider(noop.NewTracerProvider()))
			}
			env := bustest.Start(b)
			call := allowedQueryFrom(b, env, discard{}, callerOpts, opts...)
			b.SetParallelism(32) // 64 callers on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkAuditedQuery is BenchmarkAllowedQuery from 64 callers at once,
// with the audit off (audit=off: an AuditLog that keeps nothing) and on
// (audit=on: the log in JetStream, group commits, the in-process index in
// an on-disk store and the citizens' notifications, wired as the gateway
// process does). Everything runs in this process, NATS included, so
// cpu-ns/op (the process's CPU time per query) and allocs/op of on less
// off are the audit's whole cost per query.
func BenchmarkAuditedQuery(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("audit=%v", map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) {
			env := bustest.Start(b)
			var log gateway.AuditLog = discard{}
			var commits, records atomic.Int64
			if on {
				log = openAudit(b, env, func(c audit.Committed) { commits.Add(1); records.Add(int64(len(c.Leaves))) })
			}
			call := allowedQuery(b, env, log)
			b.SetParallelism(32) // 64 callers on 2 cores
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call()
				}
			})
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			if n := commits.Load(); n > 0 {
				b.ReportMetric(float64(records.Load())/float64(n), "records/commit")
			}
		})
	}
}

// BenchmarkAuditRecord is the audit's cost per record alone, as the
// gateway process pays it: 64 goroutines Append decisions about 1000
// citizens (the population of `jisr bench`) to gw-1's log in JetStream, with
// the in-process index (an on-disk store) and the notifications wired as
// the gateway wires them. cpu-ns/op is the process's CPU time per record,
// embedded NATS's storing of the batches included; the index's last partial
// flush (at most a second of records) is not.
func BenchmarkAuditRecord(b *testing.B) {
	env := bustest.Start(b)
	l := openAudit(b, env, func(audit.Committed) {})
	ckeys := make([]string, 1000)
	for i := range ckeys {
		ckeys[i] = env.Keyer.CKey(fmt.Sprintf("BK%06d", i))
	}
	var n atomic.Int64
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			now := time.Now()
			d := &decision.Decision{Time: now, VisibleAt: now, Consumer: "cnss", Provider: "civil-registry",
				Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson", CKey: ckeys[i*7919%int64(len(ckeys))],
				Purpose: "amo-enrolment", LegalBasis: "consent", Rule: "cnss-civil-registry", TokenID: "tok-" + strconv.FormatInt(i, 10),
				Allowed: true, Reason: decision.ReasonAllowed, Fields: []string{"person.eid", "person.names.latin.given", "person.names.latin.family", "person.marital_status"},
				TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Latency: time.Millisecond}
			if err := l.Append(context.Background(), d); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// openAudit opens gw-1's audit log with its index and notifications, as the
// gateway process wires them (gateway/node); onCommit is told of every
// commit too.
func openAudit(b *testing.B, env *bustest.Env, onCommit func(audit.Committed)) *audit.Log {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := natsstate.Init(ctx, env.Connect(b, "operator"), stream.Config{}); err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	td, dir := env.Fed.TrustDomain.Name(), b.TempDir()
	kp, _, err := checkpoint.EnsureKey(dir, "gw-1", checkpoint.Origin(td, "gw-1"))
	if err != nil {
		b.Fatal(err)
	}
	nc := env.Connect(b, "gateway")
	l, err := audit.Open(ctx, audit.Config{Conn: nc, TrustDomain: td, LogID: "gw-1", Key: kp}, audit.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	keys, err := checkpoint.LoadPublicKeys(dir)
	if err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	records, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		b.Fatal(err)
	}
	ckpts, err := js.Stream(ctx, subject.CheckpointStream)
	if err != nil {
		b.Fatal(err)
	}
	store, err := index.OpenStore(filepath.Join(dir, "index-gw-1.db"))
	if err != nil {
		b.Fatal(err)
	}
	ix := index.New(store, records, ckpts, td, keys, quiet)
	f := &notify.Follower{LogID: "gw-1", Notifier: notify.Log{Log: quiet}, Log: quiet}
	ix.Own(l.ID(), l.OnCommit(func(c audit.Committed) {
		leaves := make([]index.Leaf, len(c.Leaves))
		for i, lf := range c.Leaves {
			leaves[i] = index.Leaf{Hash: lf.Hash, Prev: lf.Prev, CKey: lf.CKey}
		}
		ix.AddCommitted(c.LogID, c.Seq, c.First, leaves)
		f.Committed(c)
		onCommit(c)
	}))
	rctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { ix.Run(rctx) })
	wg.Go(func() { _ = f.Run(rctx) })
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = l.Close(ctx)
		l.OnCommit(nil)
		stop()
		wg.Wait()
		store.Close()
	})
	return l
}

// allowedQuery starts a gateway with log and a provider, and returns a
// function that makes one allowed query through them.
func allowedQuery(b *testing.B, env *bustest.Env, log gateway.AuditLog, opts ...gateway.Option) func() {
	return allowedQueryFrom(b, env, log, nil, opts...)
}

// allowedQueryFrom is allowedQuery whose caller makes its bus.Call with
// callerOpts (its spans' tracer provider).
func allowedQueryFrom(b *testing.B, env *bustest.Env, log gateway.AuditLog, callerOpts []bus.SpanOption, opts ...gateway.Option) func() {
	// The caller's fair share must not refuse: the benchmark measures the
	// path, which on an idle machine outruns the test federation's rate.
	cnss, err := env.Fed.Member("cnss")
	if err != nil {
		b.Fatal(err)
	}
	cnss.Limits.QueriesPerSecond, cnss.Limits.Burst = 1e9, 1<<30
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(b, "gateway"),
		Consent: consents{fields: []string{"person.eid", "person.names.latin", "person.marital_status"}}, Audit: log,
		Log: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}, opts...)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { gw.Stop(ctx) })
	cr := env.Connect(b, "civil-registry")
	if _, err := cr.QueueSubscribe("jisr.p.civil-registry.>", "p", answer); err != nil {
		b.Fatal(err)
	}
	cr.Flush()
	nc := env.Connect(b, "cnss")
	payload, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: testEID})
	subj, err := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "GetPerson", CKey: env.Keyer.CKey(testEID)}.Subject()
	if err != nil {
		b.Fatal(err)
	}
	return func() {
		msg := &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		msg.Header.Set(bus.HeaderConsent, "ok")
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := bus.Call(cctx, nc, msg, callerOpts...); err != nil {
			b.Error(err)
		}
	}
}

// cpuTime is the process's CPU time so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
