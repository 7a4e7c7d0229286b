package adapter_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/adapter"
)

// civilRegistry is a ministry backend: a plain gRPC service.
type civilRegistry struct {
	civilv1.UnimplementedCivilRegistryServer
}

func (civilRegistry) IsAlive(ctx context.Context, req *civilv1.IsAliveRequest) (*civilv1.IsAliveResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	fmt.Println("backend: asked by", md.Get("jisr-consumer"), "for", md.Get("jisr-purpose"))
	return &civilv1.IsAliveResponse{Alive: true}, nil
}

// One adapter per member. Its provider side takes the gateway's requests
// on jisr.p.<member>.… and calls the member's backend; its consumer side is
// a gRPC server the member's backend calls as if it were the peer, which
// sends each call to the gateway on jisr.q.<member>.…. (The gateway is left
// out here: the services module does not depend on it. cmd/jisr's tests run
// both sides through it.)
func ExampleNew() {
	dir, err := os.MkdirTemp("", "adapter-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	env, err := bustest.Run(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer env.Server.Shutdown()
	conns := map[string]*nats.Conn{}
	for _, id := range []string{"gateway", "civil-registry", "cnss"} {
		if conns[id], err = env.DialAs(id); err != nil {
			fmt.Println(err)
			return
		}
		defer conns[id].Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	// The civil registry's backend, on loopback (plaintext is refused elsewhere).
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	be := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(be, civilRegistry{})
	go be.Serve(lis)
	defer be.Stop()

	// Its adapter's provider side.
	prov, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer,
		Conn: conns["civil-registry"], Backend: lis.Addr().String(), Log: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := prov.StartProvider(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer prov.Stop(ctx)

	// What the gateway sends once it has decided a query.
	const eid = "BK482913"
	subj, _ := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "IsAlive", CKey: env.Keyer.CKey(eid)}.ProviderSubject()
	data, _ := proto.Marshal(&civilv1.IsAliveRequest{Eid: eid})
	msg := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
	msg.Header.Set(bus.HeaderConsumer, "cnss")
	msg.Header.Set(bus.HeaderPurpose, "pension-continuity")
	reply, err := bus.Call(ctx, conns["gateway"], msg)
	if err != nil {
		fmt.Println(err)
		return
	}
	var alive civilv1.IsAliveResponse
	_ = proto.Unmarshal(reply.Data, &alive)
	fmt.Println("gateway: alive =", alive.GetAlive())

	// CNSS's adapter, consumer side: CNSS's backend calls it with gRPC.
	cons, err := adapter.New(adapter.Config{Member: "cnss", Federation: env.Fed, Keyer: env.Keyer, Conn: conns["cnss"], Log: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	alis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := cons.GRPCServer()
	go srv.Serve(alis)
	defer srv.Stop()
	cc, err := grpc.NewClient(alis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cc.Close()
	client := civilv1.NewCivilRegistryClient(cc)
	octx := metadata.AppendToOutgoingContext(ctx, "jisr-purpose", "pension-continuity")
	for _, e := range []string{"BK.48*", eid} {
		_, err := client.IsAlive(octx, &civilv1.IsAliveRequest{Eid: e})
		// A malformed eID is refused by the adapter itself; a good one goes
		// to the gateway, which is not running here.
		fmt.Println("cnss backend:", status.Code(err))
	}
	// Output:
	// backend: asked by [cnss] for [pension-continuity]
	// gateway: alive = true
	// cnss backend: InvalidArgument
	// cnss backend: Unavailable
}
