package adapter_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/adapter"
	"github.com/jisr-bus/jisr/services/adapter/adaptertest"
)

// TestProviderAdapterDropsUnknownFields calls the provider side directly, as
// the gateway does: the backend's unknown fields do not even reach the bus.
func TestProviderAdapterDropsUnknownFields(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	be := &adaptertest.LeakyRegistry{}
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
	t.Cleanup(func() { prov.Stop(context.Background()) })

	req := &civilv1.GetPersonRequest{Eid: "BK482913"}
	adaptertest.Smuggle(req, 7)
	data, _ := proto.Marshal(req)
	subj, err := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "GetPerson", CKey: env.Keyer.CKey("BK482913")}.ProviderSubject()
	if err != nil {
		t.Fatal(err)
	}
	reply, err := bus.Call(ctx, env.Connect(t, "gateway"), &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}})
	if err != nil {
		t.Fatal(err)
	}
	var resp civilv1.GetPersonResponse
	if err := proto.Unmarshal(reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.GetPerson().GetNames().GetLatin().GetGiven() != "Meryem" || adaptertest.HasUnknown(resp.ProtoReflect()) {
		t.Fatalf("reply %v with unknown fields %v", &resp, adaptertest.HasUnknown(resp.ProtoReflect()))
	}
	if seen := be.UnknownSeen(); len(seen) != 1 || seen[0] != 0 {
		t.Fatalf("unknown request bytes seen by the backend: %v", seen)
	}
}
