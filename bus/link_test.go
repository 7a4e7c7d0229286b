package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
)

// While a member's connection is down (its link to the hub cut, the node it
// was on gone), a call fails at once with Unavailable: the request is not
// buffered for a reconnect while its caller waits out the deadline.
func TestCallWhileDisconnectedIsUnavailable(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t, bustest.WithoutJetStream())
	nc := env.Connect(t, "cnss", nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
	env.Server.Shutdown()
	bustest.Eventually(t, 10*time.Second, func() error {
		return bustest.Check(!nc.IsConnected(), "the connection notices the server is gone")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := bus.Call(ctx, nc, &nats.Msg{Subject: "jisr.q.cnss.civil-registry.jisr.civilregistry.v1.CivilRegistry.IsAlive.x"})
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		t.Fatalf("a call on a disconnected connection: %v (context: %v), want Unavailable at once", err, ctx.Err())
	}
}
