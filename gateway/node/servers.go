package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/consent"
)

// HTTP server limits.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 32 << 10
)

// NewHTTPServer is the gateway's HTTP server with its limits: no request
// may hold a connection by sending slowly. readTimeout <= 0 is the default (30s).
func NewHTTPServer(h http.Handler, tlsConf *tls.Config, readTimeout time.Duration) *http.Server {
	rt := readTimeout
	if rt <= 0 {
		rt = httpReadTimeout
	}
	return &http.Server{
		Handler: citizen.Protect(h, tlsConf != nil), TLSConfig: tlsConf,
		ReadHeaderTimeout: min(httpReadHeaderTimeout, rt), ReadTimeout: rt,
		WriteTimeout: httpWriteTimeout, IdleTimeout: httpIdleTimeout, MaxHeaderBytes: httpMaxHeaderBytes,
	}
}

// serveGRPC serves the citizen-facing APIs (consent, access log) over gRPC,
// with health and reflection.
func (n *Node) serveGRPC() error {
	if n.o.grpcAddr == "" || n.consent == nil && n.audit == nil {
		return nil
	}
	n.grpc = grpc.NewServer(n.o.grpcOpts...)
	hs := health.NewServer()
	if n.consent != nil {
		consent.NewGRPC(n.consent.Service, n.citizens).Register(n.grpc)
		hs.SetServingStatus("jisr.consent.v1.Consent", healthpb.HealthCheckResponse_SERVING)
	}
	if n.audit != nil && n.audit.RegisterGRPC != nil {
		n.audit.RegisterGRPC(n.grpc)
	}
	healthpb.RegisterHealthServer(n.grpc, hs)
	reflection.Register(n.grpc)
	lis, err := net.Listen("tcp", n.o.grpcAddr)
	if err != nil {
		return fmt.Errorf("gateway gRPC: %w", err)
	}
	n.grpcAddr = lis.Addr().String()
	go func() {
		if err := n.grpc.Serve(lis); err != nil {
			n.cfg.Log.Error("gateway gRPC server stopped", "err", err)
		}
	}()
	n.cfg.Log.Info("gateway gRPC listening (consent, access log)", "addr", n.grpcAddr)
	return nil
}
