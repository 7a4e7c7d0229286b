package adapter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// ErrNotReady is wrapped by every error of Ready.
var ErrNotReady = errors.New("adapter not ready")

// Ready reports whether the adapter can serve now: its NATS connection is
// connected and, on the provider side, its backend answers SERVING to the
// standard gRPC health check (grpc.health.v1.Health/Check, service "").
// A backend without the health service, or one that does not answer
// within 2 s, is not ready: the adapter cannot tell it is up (fail closed).
// The error says which part is not ready; it is what /readyz prints.
func (a *Adapter) Ready(ctx context.Context) error {
	if s := a.cfg.Conn.Status(); s != nats.CONNECTED {
		return fmt.Errorf("%w: NATS connection is %s", ErrNotReady, s)
	}
	a.microMu.Lock()
	backend := a.backend
	a.microMu.Unlock()
	if backend == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// The backend link forces jisr's raw codec; the health check is a
	// plain protobuf call.
	resp, err := healthpb.NewHealthClient(backend).Check(ctx, &healthpb.HealthCheckRequest{},
		grpc.ForceCodecV2(encoding.GetCodecV2("proto")))
	switch {
	case status.Code(err) == codes.Unimplemented:
		return fmt.Errorf("%w: backend %s does not serve grpc.health.v1.Health (docs/integrate.md, \"Health\")", ErrNotReady, a.cfg.Backend)
	case err != nil:
		return fmt.Errorf("%w: backend %s health check: %s", ErrNotReady, a.cfg.Backend, status.Code(err))
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		return fmt.Errorf("%w: backend %s is %s", ErrNotReady, a.cfg.Backend, resp.GetStatus())
	}
	return nil
}
