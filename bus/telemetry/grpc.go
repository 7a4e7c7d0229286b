package telemetry

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/stats"
)

// GRPCServerHandler is the otelgrpc server stats handler (a server span per
// call, the remote parent taken from the W3C metadata) that also stamps the
// classic RPC attributes rpc.system=grpc and rpc.service beside otelgrpc's
// rpc.system.name and fully qualified rpc.method, so spans of every hop —
// gRPC and the gateway's — can be filtered by the same keys.
func GRPCServerHandler(opts ...otelgrpc.Option) stats.Handler {
	return rpcAttributes{otelgrpc.NewServerHandler(opts...)}
}

// GRPCClientHandler is the client counterpart of GRPCServerHandler: a client
// span per call whose context goes to the server in traceparent metadata.
func GRPCClientHandler(opts ...otelgrpc.Option) stats.Handler {
	return rpcAttributes{otelgrpc.NewClientHandler(opts...)}
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
