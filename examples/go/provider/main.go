// Command provider is a ministry's own CNSS backend in Go: the gRPC service
// jisr.cnss.v1.SocialSecurity, which the cnss adapter calls for the
// gateway's decided queries (docs/integrate.md).
//
//	go run ./provider -listen 127.0.0.1:9003
//	jisr dev --backend cnss=127.0.0.1:9003
//
// What it shows: the service to implement (stubs from jisr's protos), the
// metadata a backend receives (jisr-consumer, jisr-purpose), the eID it
// receives (already normalised by the gateway), errors without citizen
// data, the standard health service (the adapter's /readyz asks it) and
// reflection (optional).
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// register is a toy AMO register: every eID is affiliated and covered
// until the end of 2027, except those beginning with ZZ.
type register struct {
	cnssv1.UnimplementedSocialSecurityServer
}

// lookup reads the request's context and eID. The eID is the federation's
// normalised form (trimmed, upper-case ASCII: the gateway re-encodes every
// request with the eID whose consent it checked), so the backend compares
// it as it is and never normalises it again.
func lookup(ctx context.Context, eid string) (affiliated bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	// Who asks and why: for the backend's own records. Never log the eID.
	log.Printf("query from %v for %v", md.Get("jisr-consumer"), md.Get("jisr-purpose"))
	return eid != "" && !strings.HasPrefix(eid, "ZZ")
}

func (register) GetAmoCoverage(ctx context.Context, req *cnssv1.GetAmoCoverageRequest) (*cnssv1.GetAmoCoverageResponse, error) {
	if !lookup(ctx, req.GetEid()) {
		// A status message must never carry citizen data (the gateway
		// passes only the code on, as PROVIDER_NOT_FOUND).
		return nil, status.Error(codes.NotFound, "no AMO affiliate with this eID")
	}
	return &cnssv1.GetAmoCoverageResponse{Coverage: &cnssv1.AmoCoverage{
		Covered: true, Scheme: cnssv1.AmoScheme_AMO_SCHEME_SALARIED,
		ValidUntil: &jisrv1.Date{Year: 2027, Month: 12, Day: 31},
	}}, nil
}

func (register) IsInsured(ctx context.Context, req *cnssv1.IsInsuredRequest) (*cnssv1.IsInsuredResponse, error) {
	return &cnssv1.IsInsuredResponse{Insured: lookup(ctx, req.GetEid())}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9003", "gRPC listen address (plaintext: keep it on loopback, next to the adapter)")
	flag.Parse()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	cnssv1.RegisterSocialSecurityServer(srv, register{})
	// The adapter's /readyz asks grpc.health.v1.Health/Check (service ""):
	// a backend without it is reported not ready.
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv) // optional: grpcurl without .proto files
	log.Printf("CNSS backend listening on %s", lis.Addr())
	log.Fatal(srv.Serve(lis))
}
