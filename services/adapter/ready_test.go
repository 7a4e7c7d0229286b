package adapter_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/adapter"
)

// Ready (the adapter's /readyz) is true only while NATS is connected and
// the backend answers SERVING over gRPC health: a backend that is down, not
// serving, or has no health service makes the adapter not ready, though
// /healthz (the process is alive) still says ok.
func TestReadyFollowsNATSAndTheBackendsHealth(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	serve := func(withHealth bool) (*grpc.Server, *health.Server, string) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		civilv1.RegisterCivilRegistryServer(srv, &registry{})
		var hs *health.Server
		if withHealth {
			hs = health.NewServer()
			healthpb.RegisterHealthServer(srv, hs)
		}
		go srv.Serve(lis)
		t.Cleanup(srv.Stop)
		return srv, hs, lis.Addr().String()
	}
	start := func(backend string) *adapter.Adapter {
		a, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer,
			Conn: env.Connect(t, "civil-registry"), Backend: backend})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.StartProvider(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Stop(context.Background()) })
		return a
	}
	expect := func(a *adapter.Adapter, says string) {
		t.Helper()
		bustest.Eventually(t, 20*time.Second, func() error {
			err := a.Ready(ctx)
			if says == "" {
				return err
			}
			return bustest.Check(err != nil && strings.Contains(err.Error(), says), "not ready: "+says+" (got "+errString(err)+")")
		})
	}

	srv, hs, addr := serve(true)
	a := start(addr)
	expect(a, "")
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	expect(a, "is NOT_SERVING")
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	expect(a, "")
	srv.Stop()
	expect(a, "health check: Unavailable")

	_, _, bare := serve(false)
	expect(start(bare), "does not serve grpc.health.v1.Health")

	// A consumer-only adapter needs only NATS.
	nc := env.Connect(t, "cnss")
	cons, err := adapter.New(adapter.Config{Member: "cnss", Federation: env.Fed, Keyer: env.Keyer, Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	expect(cons, "")
	nc.Close()
	expect(cons, "NATS connection is CLOSED")
}

func errString(err error) string {
	if err == nil {
		return "ready"
	}
	return err.Error()
}

// TestAdapterWarnsOfAnotherBackend: a provider adapter names its backend's
// fingerprint in every answer to the gateway, and when the gateway's
// requests say that several backends answer for the member, it warns once
// and exports jisr_adapter_queue_group_backends.
func TestAdapterWarnsOfAnotherBackend(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(srv, &registry{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	a, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer,
		Conn: env.Connect(t, "civil-registry"), Backend: lis.Addr().String(), Registerer: reg,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.StartProvider(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop(context.Background()) })

	mine := bus.BackendFingerprint(lis.Addr().String())
	subj, _ := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "GetPerson", CKey: env.Keyer.CKey("BK482913")}.ProviderSubject()
	data, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "BK482913"})
	gw := env.Connect(t, "gateway")
	for i := 0; i < 2; i++ {
		msg := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderConsumer, "cnss")
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		msg.Header.Set(bus.HeaderBackends, "000000000000,"+mine)
		reply, err := bus.Call(ctx, gw, msg)
		if err != nil {
			t.Fatal(err)
		}
		if got := reply.Header.Get(bus.HeaderBackend); got != mine {
			t.Fatalf("Jisr-Backend %q, want %q", got, mine)
		}
	}
	if n := strings.Count(logs.String(), "another adapter of this member calls a different backend"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
	mfs, _ := reg.Gather()
	var got float64
	for _, mf := range mfs {
		if mf.GetName() == "jisr_adapter_queue_group_backends" {
			got = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if got != 2 {
		t.Errorf("jisr_adapter_queue_group_backends = %v, want 2", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
