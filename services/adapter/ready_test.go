package adapter_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/jisr-bus/jisr/bus/bustest"
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
