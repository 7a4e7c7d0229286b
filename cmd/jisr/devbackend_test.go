package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/jisr-bus/jisr/cmd/internal/dev"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// ownRegistry is a ministry's own civil-registry backend: it records the
// eID and metadata it receives.
type ownRegistry struct {
	civilv1.UnimplementedCivilRegistryServer
	mu                sync.Mutex
	eids              []string
	consumer, purpose string
}

func (r *ownRegistry) GetPerson(ctx context.Context, req *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.eids = append(r.eids, req.GetEid())
	if v := md.Get("jisr-consumer"); len(v) > 0 {
		r.consumer = v[0]
	}
	if v := md.Get("jisr-purpose"); len(v) > 0 {
		r.purpose = v[0]
	}
	r.mu.Unlock()
	return &civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: req.GetEid(),
		Names: &civilv1.Names{Latin: &jisrv1.Name{Given: "Own", Family: "Backend"}}}}, nil
}

// TestDevWithYourOwnBackend: `jisr dev --backend civil-registry=ADDR` puts
// the caller's backend behind the civil-registry adapter instead of the
// reference one; a consumer's eID typed " bk…  " in lower case reaches it
// normalised (the gateway re-encodes the request with the eID it checked),
// with the jisr-consumer and jisr-purpose metadata.
func TestDevWithYourOwnBackend(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	own := &ownRegistry{}
	srv := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(srv, own)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	f := startDevWith(t, nil, func(o *dev.Options) {
		o.Backends = map[string]string{"civil-registry": lis.Addr().String()}
	})
	if !strings.Contains(f.out.String(), "yours: --backend civil-registry="+lis.Addr().String()) {
		t.Errorf("the printout does not show your backend:\n%s", f.out.String())
	}
	if got := f.demo.Endpoints["backend/civil-registry"]; got != lis.Addr().String() {
		t.Errorf("demo.json backend/civil-registry = %q, want %s", got, lis.Addr())
	}
	tok := f.getPersonToken(t)
	cc, err := grpc.NewClient(f.demo.Endpoints["adapter/cnss"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(),
		metadata.Pairs("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token)), 30*time.Second)
	defer cancel()
	typed := "  " + strings.ToLower(tok.Citizen) + " "
	resp, err := civilv1.NewCivilRegistryClient(cc).GetPerson(ctx, &civilv1.GetPersonRequest{Eid: typed})
	if err != nil {
		t.Fatalf("through your backend: %v", err)
	}
	if resp.GetPerson().GetNames().GetLatin().GetFamily() != "Backend" {
		t.Errorf("the answer did not come from your backend: %v", resp)
	}
	own.mu.Lock()
	defer own.mu.Unlock()
	if len(own.eids) != 1 || own.eids[0] != tok.Citizen || own.consumer != "cnss" || own.purpose != tok.Purpose {
		t.Errorf("your backend got eIDs %q, consumer %q, purpose %q; want [%s], cnss, %s", own.eids, own.consumer, own.purpose, tok.Citizen, tok.Purpose)
	}
}
