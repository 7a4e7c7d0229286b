package adapter_test

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// registry is a small real gRPC civil registry backend.
type registry struct {
	civilv1.UnimplementedCivilRegistryServer
	mu       sync.Mutex
	delay    time.Duration
	consumer string
	purpose  string
}

func (r *registry) GetPerson(ctx context.Context, req *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.consumer, r.purpose = first(md, "jisr-consumer"), first(md, "jisr-purpose")
	delay := r.delay
	r.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if req.GetEid() == "ZZ000000" {
		return nil, status.Error(codes.NotFound, "no such person")
	}
	return &civilv1.GetPersonResponse{Person: &civilv1.Person{
		Eid:   req.GetEid(),
		Names: &civilv1.Names{Latin: &jisrv1.Name{Given: "Amina", Family: "El Idrissi"}},
	}}, nil
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
