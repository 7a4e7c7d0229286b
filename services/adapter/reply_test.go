package adapter_test

import (
	"context"
	"net"
	"sync/atomic"
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
)

// counting is the civil registry backend, counting its calls.
type counting struct {
	registry
	calls atomic.Int32
}

func (c *counting) GetPerson(ctx context.Context, req *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
	c.calls.Add(1)
	return c.registry.GetPerson(ctx, req)
}

// A provider adapter answers only on the gateway's inbox: a request whose
// reply subject is anywhere else is dropped before its backend is called,
// so the provider (which may answer once, allow_responses) never publishes
// where the asker chose.
func TestProviderAnswersOnlyTheGatewaysInbox(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	be := &counting{}
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

	// The other members listen on their inboxes.
	leaked := make(chan *nats.Msg, 16)
	for _, m := range []string{"cnss", "tax", "health"} {
		nc := env.Connect(t, m)
		if _, err := nc.ChanSubscribe(subject.Inbox(m)+".>", leaked); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	gw := env.Connect(t, "gateway")
	ck := env.Keyer.CKey("AB123456")
	subj, err := subject.Query{Provider: "civil-registry", Service: subject.ServiceToken("jisr.civilregistry.v1.CivilRegistry"), Method: "GetPerson", CKey: ck}.ProviderSubject()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "AB123456"})
	for _, reply := range []string{"_INBOX.cnss.leak", "_INBOX.tax.leak", "_INBOX.gateway", "jisr.audit.gw-1.x", "$JS.API.STREAM.DELETE.JISR_AUDIT", ""} {
		if err := gw.PublishMsg(&nats.Msg{Subject: subj, Reply: reply, Data: data, Header: nats.Header{bus.HeaderPurpose: {"p"}}}); err != nil {
			t.Fatal(err)
		}
	}
	// The gateway's own request, after them, is answered.
	reply, err := gw.RequestMsgWithContext(ctx, &nats.Msg{Subject: subj, Data: data, Header: nats.Header{bus.HeaderPurpose: {"p"}}})
	if err != nil {
		t.Fatal(err)
	}
	if st := bus.StatusOf(reply.Header); st.Err() != nil {
		t.Fatal(st.Err())
	}
	ctx2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	if err := prov.Stop(ctx2); err != nil { // waits for every request in flight
		t.Fatal(err)
	}
	if n := be.calls.Load(); n != 1 {
		t.Fatalf("the backend was called %d times, want 1 (only for the gateway's own request)", n)
	}
	select {
	case m := <-leaked:
		t.Fatalf("%s received an answer", m.Subject)
	default:
	}
}
