package adapter_test

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/adapter"
)

// TestProviderWorkersEndAndStartAgain: provider workers that end as soon
// as they are idle (the idle timeout at its shortest) lose no request, in
// bursts of concurrent requests and one at a time, and Stop still waits
// for none left behind.
func TestProviderWorkersEndAndStartAgain(t *testing.T) {
	old := adapter.SetWorkerIdle(1)
	t.Cleanup(func() { adapter.SetWorkerIdle(old) })
	env := bustest.Start(t, bustest.WithoutJetStream())
	ctx := context.Background()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bs := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(bs, fixedRegistry{})
	go bs.Serve(lis)
	t.Cleanup(bs.Stop)
	prov, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "civil-registry"), Backend: lis.Addr().String(), Log: bustest.Logger(t), MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.StartProvider(ctx); err != nil {
		t.Fatal(err)
	}
	gw := env.Connect(t, "gateway")
	subj, err := subject.Query{Provider: "civil-registry", Service: subject.ServiceToken("jisr.civilregistry.v1.CivilRegistry"), Method: "GetPerson", CKey: env.Keyer.CKey("AB123456")}.ProviderSubject()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "AB123456"})
	want, _ := proto.Marshal(benchPerson)
	call := func() error {
		reply, err := bus.Call(ctx, gw, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{bus.HeaderPurpose: {"eligibility"}, bus.HeaderConsumer: {"cnss"}}})
		if err == nil && !proto.Equal(decode(t, reply.Data), decode(t, want)) {
			t.Errorf("reply %x, want %x", reply.Data, want)
		}
		return err
	}
	for i := range 20 {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for range 32 { // more than MaxInFlight: requests wait for a slot
			wg.Go(func() { errs <- call() })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	if err := prov.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

func decode(t *testing.T, b []byte) *civilv1.GetPersonResponse {
	t.Helper()
	var r civilv1.GetPersonResponse
	if err := proto.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}
