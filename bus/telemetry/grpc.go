package telemetry

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
)

// GRPCServerHandler is the otelgrpc server stats handler (a server span per
// call, the remote parent taken from the W3C metadata) that also stamps the
// classic RPC attributes rpc.system=grpc and rpc.service beside otelgrpc's
// rpc.system.name and fully qualified rpc.method, so spans of every hop —
// gRPC and the gateway's — can be filtered by the same keys.
//
// Calls of the standard health service and of reflection make no span:
// probes and grpcurl's listings are not queries, and a readiness probe
// every few seconds would drown the traces.
func GRPCServerHandler(opts ...otelgrpc.Option) stats.Handler {
	return rpcAttributes{otelgrpc.NewServerHandler(append([]otelgrpc.Option{otelgrpc.WithFilter(NotHealthOrReflection)}, opts...)...)}
}

// NotHealthOrReflection is the gRPC span filter of every jisr server and
// client: false for grpc.health.v1 and grpc.reflection.* calls.
var NotHealthOrReflection = filters.None(filters.ServicePrefix("grpc.health."), filters.ServicePrefix("grpc.reflection."))

// GRPCClientHandler is the client counterpart of GRPCServerHandler: a client
// span per call whose context goes to the server in traceparent metadata.
func GRPCClientHandler(opts ...otelgrpc.Option) stats.Handler {
	return rpcAttributes{otelgrpc.NewClientHandler(append([]otelgrpc.Option{otelgrpc.WithFilter(NotHealthOrReflection)}, opts...)...)}
}

type rpcAttributes struct{ stats.Handler }

// TagRPC lets otelgrpc start the span, then adds the service name.
func (h rpcAttributes) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx = h.Handler.TagRPC(ctx, info)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		service, _ := splitMethod(info.FullMethodName)
		span.SetAttributes(attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", service))
	}
	return ctx
}
