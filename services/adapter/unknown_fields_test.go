package adapter_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/proto/unknownfields"
	"github.com/jisr-bus/jisr/services/adapter"
)

// secret is what a leaky backend smuggles in fields no descriptor knows.
const secret = "diagnosis=HIV-POSITIVE criminal-record=YES"

// smuggle adds unknown fields (a string and a varint) to m.
func smuggle(m proto.Message, num protowire.Number) {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	b = protowire.AppendString(b, secret)
	b = protowire.AppendTag(b, num+1, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	m.ProtoReflect().SetUnknown(b)
}

// leakyRegistry is a real gRPC civil registry backend that returns unknown
// fields at every nesting level of its replies, and records whether the
// requests it got carried any.
type leakyRegistry struct {
	civilv1.UnimplementedCivilRegistryServer
	mu      sync.Mutex
	unknown []int // unknown bytes in each request received
}

func (r *leakyRegistry) saw(req proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unknown = append(r.unknown, len(req.ProtoReflect().GetUnknown()))
}

func (r *leakyRegistry) GetPerson(_ context.Context, req *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
	r.saw(req)
	latin := &jisrv1.Name{Given: "Meryem", Family: "Alaoui"}
	arabic := &jisrv1.Name{Given: "مريم", Family: "العلوي"}
	date := &jisrv1.Date{Year: 1990, Month: 3, Day: 14}
	place := &jisrv1.Place{Commune: "Fès", Country: "MA"}
	names := &civilv1.Names{Latin: latin, Arabic: arabic}
	birth := &civilv1.Birth{Date: date, Place: place}
	p := &civilv1.Person{Eid: req.GetEid(), Names: names, Sex: civilv1.Sex_SEX_FEMALE, Birth: birth,
		VitalStatus: civilv1.VitalStatus_VITAL_STATUS_ALIVE, FatherName: "Driss", MotherName: "Khadija"}
	resp := &civilv1.GetPersonResponse{Person: p}
	for i, m := range []proto.Message{resp, p, names, latin, arabic, birth, date, place} {
		smuggle(m, protowire.Number(31+2*i)) // 31 at top level, 33 in person, …
	}
	return resp, nil
}

func (r *leakyRegistry) GetHousehold(_ context.Context, req *civilv1.GetHouseholdRequest) (*civilv1.GetHouseholdResponse, error) {
	r.saw(req)
	h := &civilv1.Household{HouseholdId: "H-1", Members: []*civilv1.HouseholdMember{
		{Eid: req.GetEid(), Relation: civilv1.Relation_RELATION_HEAD, GivenName: "Meryem", BirthDate: &jisrv1.Date{Year: 1990}, Alive: true},
		{Eid: "BK100001", Relation: civilv1.Relation_RELATION_SPOUSE, GivenName: "Omar", BirthDate: &jisrv1.Date{Year: 1988}, Alive: true},
		{Eid: "BK100002", Relation: civilv1.Relation_RELATION_CHILD, GivenName: "Sara", BirthDate: &jisrv1.Date{Year: 2015}, Alive: true},
	}}
	resp := &civilv1.GetHouseholdResponse{Household: h}
	smuggle(resp, 31)
	smuggle(h, 40)
	for i, m := range h.Members {
		smuggle(m, protowire.Number(42+i))
		smuggle(m.BirthDate, 50)
	}
	return resp, nil
}

func (r *leakyRegistry) IsAlive(_ context.Context, req *civilv1.IsAliveRequest) (*civilv1.IsAliveResponse, error) {
	r.saw(req)
	resp := &civilv1.IsAliveResponse{Alive: true}
	smuggle(resp, 31)
	return resp, nil
}

// hasUnknown reports whether m or any message inside it has unknown fields.
func hasUnknown(m protoreflect.Message) bool {
	return unknownfields.Drop(proto.Clone(m.Interface()).ProtoReflect()) > 0
}

// TestProviderAdapterDropsUnknownFields calls the provider side directly, as
// the gateway does: the backend's unknown fields do not even reach the bus.
func TestProviderAdapterDropsUnknownFields(t *testing.T) {
	t.Parallel()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	be := &leakyRegistry{}
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
	smuggle(req, 7)
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
	if resp.GetPerson().GetNames().GetLatin().GetGiven() != "Meryem" || hasUnknown(resp.ProtoReflect()) {
		t.Fatalf("reply %v with unknown fields %v", &resp, hasUnknown(resp.ProtoReflect()))
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.unknown) != 1 || be.unknown[0] != 0 {
		t.Fatalf("unknown request bytes seen by the backend: %v", be.unknown)
	}
}
