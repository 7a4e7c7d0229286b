package adapter_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/adapter"
)

// peers records the client addresses its backend was called from.
type peers struct {
	counting
	mu   sync.Mutex
	from map[string]int
}

func (p *peers) GetPerson(ctx context.Context, req *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
	if pr, ok := peer.FromContext(ctx); ok {
		p.mu.Lock()
		p.from[pr.Addr.String()]++
		p.mu.Unlock()
	}
	return p.counting.GetPerson(ctx, req)
}

// With further connections, the provider side takes requests on each (one
// queue group) and answers every one, and calls its backend over as many
// links (HTTP/2 connections), in turn.
func TestProviderTakesRequestsOnEveryConnection(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	be := &peers{from: map[string]int{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bs := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(bs, be)
	go bs.Serve(lis)
	t.Cleanup(bs.Stop)
	main, extra := env.Connect(t, "civil-registry"), env.Connect(t, "civil-registry")
	prov, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer, Conn: main, MoreConns: []*nats.Conn{extra}, Backend: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.StartProvider(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Stop(ctx) })
	gw := env.Connect(t, "gateway")
	subj, err := subject.Query{Provider: "civil-registry", Service: subject.ServiceToken("jisr.civilregistry.v1.CivilRegistry"), Method: "GetPerson", CKey: env.Keyer.CKey("AB123456")}.ProviderSubject()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "AB123456"})
	const n = 40
	for range n {
		if _, err := bus.Call(ctx, gw, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{bus.HeaderPurpose: {"p"}, bus.HeaderConsumer: {"cnss"}}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := be.calls.Load(); got != n {
		t.Fatalf("%d backend calls, want %d", got, n)
	}
	if main.Stats().InMsgs == 0 || extra.Stats().InMsgs == 0 {
		t.Fatalf("requests per connection: main %d, further %d: want both used", main.Stats().InMsgs, extra.Stats().InMsgs)
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.from) != 2 {
		t.Fatalf("backend calls by client address: %v; want 2 links, taken in turn", be.from)
	}
	for addr, calls := range be.from {
		if calls != n/2 {
			t.Errorf("link %s carried %d of %d calls, want %d (in turn)", addr, calls, n, n/2)
		}
	}
}
