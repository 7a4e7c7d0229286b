package adapter_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/refusal"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/adapter"
)

// Every refusal an adapter gives on its own carries a google.rpc.ErrorInfo
// with a reason of the one vocabulary (docs/errors.md), on both sides: the
// consumer side (a backend's gRPC call) and the provider side (a NATS
// request from the gateway). A bad eID, including one spelt with a letter
// whose upper case is ASCII (nſ389813 → NS389813 by Unicode upper-casing),
// is refused with BAD_EID before anything reaches the bus.
func TestAdapterRefusalsCarryErrorInfo(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cons, err := adapter.New(adapter.Config{Member: "cnss", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "cnss")})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := cons.GRPCServer()
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := civilv1.NewCivilRegistryClient(cc)

	for _, c := range []struct {
		name, eid, provider string
		code                codes.Code
		reason, says        string
	}{
		{"no eID", "", "", codes.InvalidArgument, refusal.ReasonBadEID, `field "eid"`},
		{"long s", "nſ389813", "", codes.InvalidArgument, refusal.ReasonBadEID, "ASCII"},
		{"dotless i", "ıD12345", "", codes.InvalidArgument, refusal.ReasonBadEID, "ASCII"},
		{"ideographic space", "NS389813\u3000", "", codes.InvalidArgument, refusal.ReasonBadEID, "at most 8"},
		{"subject metacharacters", "BK.48*", "", codes.InvalidArgument, refusal.ReasonBadEID, "[A-Z]{1,2}[0-9]{1,6}"},
		{"provider that does not provide it", "BK482913", "tax", codes.NotFound, refusal.ReasonUnknownProvider, "providers: civil-registry"},
		{"no gateway", "BK482913", "", codes.Unavailable, refusal.ReasonGatewayUnavailable, "gateway"},
	} {
		octx := metadata.AppendToOutgoingContext(ctx, "jisr-purpose", "amo-enrolment")
		if c.provider != "" {
			octx = metadata.AppendToOutgoingContext(octx, "jisr-provider", c.provider)
		}
		_, err := client.GetPerson(octx, &civilv1.GetPersonRequest{Eid: c.eid})
		st := status.Convert(err)
		if st.Code() != c.code || refusal.OfStatus(st) != c.reason || !strings.Contains(st.Message(), c.says) {
			t.Errorf("%s: got %v %q %q, want %v %s naming %q", c.name, st.Code(), refusal.OfStatus(st), st.Message(), c.code, c.reason, c.says)
		}
		if c.eid != "" && strings.Contains(st.Message(), c.eid) {
			t.Errorf("%s: the message carries the eID: %q", c.name, st.Message())
		}
	}

	// A service or method the federation does not have.
	err = cc.Invoke(ctx, "/jisr.nowhere.v1.Nothing/Get", &civilv1.GetPersonRequest{Eid: "BK482913"}, &civilv1.GetPersonResponse{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || refusal.OfStatus(st) != refusal.ReasonUnknownMethod {
		t.Errorf("unknown service: got %v %q %q", st.Code(), refusal.OfStatus(st), st.Message())
	}
	// Over the bus's maximum payload (the embedded server's max_payload).
	big := &civilv1.GetPersonRequest{Eid: "BK482913"}
	big.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, 2<<20)))
	_, err = client.GetPerson(metadata.AppendToOutgoingContext(ctx, "jisr-purpose", "amo-enrolment"), big)
	if st := status.Convert(err); refusal.OfStatus(st) != refusal.ReasonRequestTooLarge {
		t.Errorf("oversized request: got %v %q %q", st.Code(), refusal.OfStatus(st), st.Message())
	}

	// The provider side answers the gateway's malformed or unknown requests
	// with a reason too (the backend is never called for them).
	be := &counting{}
	blis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bsrv := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(bsrv, be)
	go bsrv.Serve(blis)
	t.Cleanup(bsrv.Stop)
	prov, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer,
		Conn: env.Connect(t, "civil-registry"), Backend: blis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.StartProvider(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Stop(context.Background()) })
	gw := env.Connect(t, "gateway")
	ck := env.Keyer.CKey("BK482913")
	good, _ := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "GetPerson", CKey: ck}.ProviderSubject()
	unknown, _ := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "DropTables", CKey: ck}.ProviderSubject()
	valid, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "BK482913"})
	for _, c := range []struct {
		name, subj string
		data       []byte
		code       codes.Code
		reason     string
	}{
		{"short subject", "jisr.p.civil-registry.x", valid, codes.InvalidArgument, refusal.ReasonBadSubject},
		{"unknown method", unknown, valid, codes.Unimplemented, refusal.ReasonUnknownMethod},
		{"not a request", good, []byte{0xff, 0xff, 0xff}, codes.InvalidArgument, refusal.ReasonMalformedPayload},
	} {
		msg := &nats.Msg{Subject: c.subj, Data: c.data, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderConsumer, "cnss")
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		_, err := bus.Call(ctx, gw, msg)
		st := status.Convert(err)
		if st.Code() != c.code || refusal.OfStatus(st) != c.reason {
			t.Errorf("provider side, %s: got %v %q %q, want %v %s", c.name, st.Code(), refusal.OfStatus(st), st.Message(), c.code, c.reason)
		}
	}
	if n := be.calls.Load(); n != 0 {
		t.Errorf("the backend was called %d times for refused requests", n)
	}
}
