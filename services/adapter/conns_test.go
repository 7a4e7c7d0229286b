package adapter_test

import (
	"context"
	"fmt"
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
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
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

// With further connections, the adapter publishes its events over all of
// them, each citizen's always over the same one (by its ckey), so that a
// citizen's events never overtake each other on two connections; on a
// PublishStream each citizen's events still reach the gateway in the order
// sent. Events all sent on Conn, or a connection picked per event, fail
// it.
func TestEventsSpreadOverTheConnectionsByCitizen(t *testing.T) {
	t.Parallel()
	f := startStreamFixtureConns(t, 3)
	f.gw.releaseAll()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out := func() []uint64 {
		var n []uint64
		for _, nc := range f.conns {
			n = append(n, nc.Stats().OutMsgs)
		}
		return n
	}
	const citizens, each = 60, 3 // all three connections used by chance: 1 - 3·(2/3)^60, about 1 - 1e-10
	used := map[int]int{}        // connection → citizens it carried
	for c := range citizens {
		before := out()
		for i := range each {
			if _, err := f.client.Publish(ctx, &eventsv1.PublishRequest{Event: addressChange(fmt.Sprintf("unary-%06d%06d", c, i), fmt.Sprintf("AB%d", 1000+c))}); err != nil {
				t.Fatal(err)
			}
		}
		after := out()
		carried := -1
		for k := range f.conns {
			switch n := after[k] - before[k]; n {
			case 0:
			case each:
				carried = k
			default:
				t.Fatalf("citizen %d: connection %d carried %d of its %d events, want none or all", c, k, n, each)
			}
		}
		if carried < 0 {
			t.Fatalf("citizen %d: no connection carried its events", c)
		}
		used[carried]++
	}
	if len(used) != len(f.conns) {
		t.Fatalf("events of %d citizens on connections %v, want all %d", citizens, used, len(f.conns))
	}

	// Many citizens at once on a stream: each one's events reach the
	// gateway in the order sent.
	st, err := f.client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const many, per = 20, 8
	sent := map[string][]string{} // eID → ids in order
	for i := range per {
		for c := range many {
			eid := fmt.Sprintf("CD%d", 2000+c)
			id := fmt.Sprintf("stream-%06d%06d", c, i)
			sent[eid] = append(sent[eid], id)
			if err := st.Send(&eventsv1.PublishStreamRequest{Event: addressChange(id, eid)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	answers := closeAndRead(t, st)
	if len(answers) != many*per {
		t.Fatalf("%d answers, want %d", len(answers), many*per)
	}
	for _, r := range answers {
		if r.GetCode() != 0 {
			t.Fatalf("answer %v", r)
		}
	}
	f.gw.mu.Lock()
	defer f.gw.mu.Unlock()
	for eid, ids := range sent {
		if got := f.gw.order[f.env.Keyer.CKey(eid)]; fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("citizen %s's events reached the gateway as %v, sent as %v", eid, got, ids)
		}
	}
}
