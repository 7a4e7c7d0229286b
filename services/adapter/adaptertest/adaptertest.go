// Package adaptertest holds test doubles shared by the adapter's tests and
// the end-to-end tests in cmd/jisr: a real gRPC civil-registry backend that
// leaks protobuf fields no descriptor knows. Tests only (tools/importcheck
// keeps it out of library code).
package adaptertest

import (
	"context"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/proto/unknownfields"
)

// Secret is what a leaky backend smuggles in fields no descriptor knows.
const Secret = "diagnosis=HIV-POSITIVE criminal-record=YES"

// Smuggle adds unknown fields (a string and a varint) to m.
func Smuggle(m proto.Message, num protowire.Number) {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	b = protowire.AppendString(b, Secret)
	b = protowire.AppendTag(b, num+1, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	m.ProtoReflect().SetUnknown(b)
}

// LeakyRegistry is a real gRPC civil registry backend that returns unknown
// fields at every nesting level of its replies, and records whether the
// requests it got carried any.
type LeakyRegistry struct {
	civilv1.UnimplementedCivilRegistryServer
	mu      sync.Mutex
	unknown []int // unknown bytes in each request received
}

func (r *LeakyRegistry) saw(req proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unknown = append(r.unknown, len(req.ProtoReflect().GetUnknown()))
}

func (r *LeakyRegistry) GetPerson(_ context.Context, req *civilv1.GetPersonRequest) (*civilv1.GetPersonResponse, error) {
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
		Smuggle(m, protowire.Number(31+2*i)) // 31 at top level, 33 in person, …
	}
	return resp, nil
}

func (r *LeakyRegistry) GetHousehold(_ context.Context, req *civilv1.GetHouseholdRequest) (*civilv1.GetHouseholdResponse, error) {
	r.saw(req)
	h := &civilv1.Household{HouseholdId: "H-1", Members: []*civilv1.HouseholdMember{
		{Eid: req.GetEid(), Relation: civilv1.Relation_RELATION_HEAD, GivenName: "Meryem", BirthDate: &jisrv1.Date{Year: 1990}, Alive: true},
		{Eid: "BK100001", Relation: civilv1.Relation_RELATION_SPOUSE, GivenName: "Omar", BirthDate: &jisrv1.Date{Year: 1988}, Alive: true},
		{Eid: "BK100002", Relation: civilv1.Relation_RELATION_CHILD, GivenName: "Sara", BirthDate: &jisrv1.Date{Year: 2015}, Alive: true},
	}}
	resp := &civilv1.GetHouseholdResponse{Household: h}
	Smuggle(resp, 31)
	Smuggle(h, 40)
	for i, m := range h.Members {
		Smuggle(m, protowire.Number(42+i))
		Smuggle(m.BirthDate, 50)
	}
	return resp, nil
}

func (r *LeakyRegistry) IsAlive(_ context.Context, req *civilv1.IsAliveRequest) (*civilv1.IsAliveResponse, error) {
	r.saw(req)
	resp := &civilv1.IsAliveResponse{Alive: true}
	Smuggle(resp, 31)
	return resp, nil
}

// HasUnknown reports whether m or any message inside it has unknown fields.
func HasUnknown(m protoreflect.Message) bool {
	return unknownfields.Drop(proto.Clone(m.Interface()).ProtoReflect()) > 0
}

// UnknownSeen returns, for each request the backend received, how many bytes
// of it no descriptor knew (0 when the adapter re-encoded it).
func (r *LeakyRegistry) UnknownSeen() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.unknown...)
}
