package main_test

// The adapters behind the real gateway: end-to-end tests that need both the
// services and the gateway modules, so they live here, where everything is
// wired, and services/go.mod does not require the gateway.

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/services/adapter"
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

type allow struct{}

func (allow) Verify(_ context.Context, r *decision.Request) (*decision.Grant, error) {
	if r.Token != "ok" {
		return nil, decision.Refuse(codes.Unauthenticated, "CONSENT_INVALID", "invalid consent token")
	}
	return &decision.Grant{TokenID: "t1"}, nil
}

type nopAudit struct{}

func (nopAudit) Append(context.Context, *decision.Decision) error { return nil }

type fixture struct {
	client  *grpc.ClientConn
	backend *registry
	stopBE  func()
}

func setup(t *testing.T) *fixture {
	t.Helper()
	env := bustest.Start(t)
	ctx := context.Background()
	gw, err := gateway.New(gateway.Config{Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"), Consent: allow{}, Audit: nopAudit{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })

	// The civil registry's backend and its provider-side adapter.
	be := &registry{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bs := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(bs, be)
	go bs.Serve(lis)
	t.Cleanup(bs.Stop)
	prov, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "civil-registry"), Backend: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.StartProvider(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Stop(ctx) })

	// CNSS's consumer-side adapter, as its backend sees it.
	cons, err := adapter.New(adapter.Config{Member: "cnss", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "cnss")})
	if err != nil {
		t.Fatal(err)
	}
	alis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := cons.GRPCServer()
	go srv.Serve(alis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(alis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &fixture{client: cc, backend: be, stopBE: bs.Stop}
}

func call(ctx context.Context, cc *grpc.ClientConn, eid, purpose, token string) (*civilv1.GetPersonResponse, error) {
	md := metadata.Pairs()
	if purpose != "" {
		md.Set("jisr-purpose", purpose)
	}
	if token != "" {
		md.Set("jisr-consent", token)
	}
	return civilv1.NewCivilRegistryClient(cc).GetPerson(metadata.NewOutgoingContext(ctx, md), &civilv1.GetPersonRequest{Eid: eid})
}

func TestEndToEndThroughBothAdapters(t *testing.T) {
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := call(ctx, f.client, "bk482913", "amo-enrolment", "ok")
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPerson().GetNames().GetLatin().GetGiven() != "Amina" {
		t.Fatalf("reply %v", resp)
	}
	f.backend.mu.Lock()
	if f.backend.consumer != "cnss" || f.backend.purpose != "amo-enrolment" {
		t.Fatalf("backend saw consumer %q purpose %q", f.backend.consumer, f.backend.purpose)
	}
	f.backend.mu.Unlock()

	t.Run("refusal travels back with its code", func(t *testing.T) {
		_, err := call(ctx, f.client, "BK482913", "amo-enrolment", "")
		st := status.Convert(err)
		if st.Code() != codes.Unauthenticated || decision.ReasonOf(st) != decision.ReasonConsentRequired {
			t.Fatalf("got %v %q", st.Code(), st.Message())
		}
	})
	t.Run("backend status travels back", func(t *testing.T) {
		_, err := call(ctx, f.client, "ZZ000000", "amo-enrolment", "ok")
		if status.Code(err) != codes.NotFound {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad eIDs refused at the adapter without leaking", func(t *testing.T) {
		for _, eid := range []string{"AB.123", "AB*", ">", "A B", "ÄB1", strings.Repeat("9", 10<<10), ""} {
			_, err := call(ctx, f.client, eid, "amo-enrolment", "ok")
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Errorf("eID %.20q: got %v %s", eid, st.Code(), st.Message())
			}
			if len(eid) > 1 && strings.Contains(st.Message(), eid) {
				t.Errorf("message %q repeats the eID", st.Message())
			}
		}
	})
	t.Run("payload over the bus limit", func(t *testing.T) {
		big := &civilv1.GetPersonRequest{Eid: "BK482913"}
		// Unknown fields still travel: pad the request past NATS's 1 MiB.
		raw := make([]byte, 0, 2<<20)
		raw = append(raw, 0x1a) // field 3, wire type 2 (unknown to GetPersonRequest)
		n := 1<<20 + 10
		for n >= 0x80 {
			raw = append(raw, byte(n)|0x80)
			n >>= 7
		}
		raw = append(raw, byte(n))
		raw = append(raw, make([]byte, 1<<20+10)...)
		big.ProtoReflect().SetUnknown(raw)
		md := metadata.Pairs("jisr-purpose", "amo-enrolment", "jisr-consent", "ok")
		_, err := civilv1.NewCivilRegistryClient(f.client).GetPerson(metadata.NewOutgoingContext(ctx, md), big)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("got %v", err)
		}
	})
}

func TestSlowAndDeadBackend(t *testing.T) {
	f := setup(t)
	f.backend.mu.Lock()
	f.backend.delay = 3 * time.Second
	f.backend.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := call(ctx, f.client, "BK482913", "amo-enrolment", "ok")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("slow backend: got %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("the caller waited past its deadline")
	}
	f.stopBE()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	_, err = call(ctx2, f.client, "BK482913", "amo-enrolment", "ok")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("dead backend: got %v", err)
	}
}

func TestReflectionAndHealth(t *testing.T) {
	f := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(f.client).Check(ctx, &healthpb.HealthCheckRequest{Service: "jisr.civilregistry.v1.CivilRegistry"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v %v", h, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(f.client).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"jisr.civilregistry.v1.CivilRegistry", "jisr.tax.v1.Tax", "jisr.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	// Only what CNSS may call: no rule lets it call its own service.
	if strings.Contains(strings.Join(names, " "), "jisr.cnss.v1.SocialSecurity") {
		t.Errorf("reflection lists %v, with a service CNSS may not call", names)
	}
	// The file descriptors resolve too (what grpcurl needs to build requests).
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "jisr.civilregistry.v1.CivilRegistry"}})
	resp, err = stream.Recv()
	if err != nil || len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("file for symbol: %v %v", resp, err)
	}
}
