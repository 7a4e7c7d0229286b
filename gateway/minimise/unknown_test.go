package minimise_test

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/jisr-bus/jisr/gateway/minimise"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

func junk(m proto.Message, num protowire.Number) {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	b = protowire.AppendString(b, "secret")
	b = protowire.AppendTag(b, num+1, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)
	m.ProtoReflect().SetUnknown(b)
}

func household() *civilv1.GetHouseholdResponse {
	return &civilv1.GetHouseholdResponse{Household: &civilv1.Household{HouseholdId: "H-1", Members: []*civilv1.HouseholdMember{
		{Eid: "BK1", Relation: civilv1.Relation_RELATION_HEAD, GivenName: "Meryem", BirthDate: &jisrv1.Date{Year: 1990}},
		{Eid: "BK2", Relation: civilv1.Relation_RELATION_CHILD, GivenName: "Sara"},
	}}}
}

func TestDropUnknownAtEveryLevel(t *testing.T) {
	t.Parallel()
	h := household()
	junk(h, 31)
	junk(h.Household, 40)
	junk(h.Household.Members[1], 41)
	junk(h.Household.Members[0].BirthDate, 42)
	want := household()
	if n := minimise.DropUnknown(h.ProtoReflect()); n != 8 || !proto.Equal(h, want) {
		t.Fatalf("dropped %d (want 8): %v", n, h)
	}
	b, _ := proto.Marshal(h)
	w, _ := proto.Marshal(want)
	if !slices.Equal(b, w) {
		t.Fatal("bytes still carry unknown fields")
	}

	// Map values: a Struct's fields are a map<string, Value>.
	s, _ := structpb.NewStruct(map[string]any{"a": map[string]any{"b": "c"}, "l": []any{map[string]any{"d": 1.0}}})
	inner := s.Fields["a"].GetStructValue()
	junk(inner, 50)
	junk(s.Fields["l"].GetListValue().Values[0].GetStructValue(), 51)
	junk(s.Fields["a"], 52)
	if n := minimise.DropUnknown(s.ProtoReflect()); n != 6 || len(inner.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("map values: dropped %d, want 6", n)
	}

	// A malformed unknown tail counts as one field and is dropped.
	p := &civilv1.Person{Eid: "BK1"}
	p.ProtoReflect().SetUnknown([]byte{0xfa, 0x01, 0x7f})
	if n := minimise.DropUnknown(p.ProtoReflect()); n != 1 || len(p.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("malformed tail: dropped %d", n)
	}
}

func TestNamedOnlyFieldsNeedTheirOwnPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		paths []string
		eids  bool
		want  []string
	}{
		// Who a relative is (eID, name, birth, alive) is released only where
		// it is named: otherwise the members' count and relation only.
		{"no restriction", nil, false, []string{"household.household_id", "household.members.relation"}},
		{"a path above it", []string{"household"}, false, []string{"household.household_id", "household.members.relation"}},
		{"its parent", []string{"household.members"}, false, []string{"household.members.relation"}},
		{"relation only", []string{"household.members.relation"}, false, []string{"household.members.relation"}},
		{"names named", []string{"household.members.given_name", "household.members.birth_date", "household.members.relation"}, false, []string{
			"household.members.birth_date.year", "household.members.given_name", "household.members.relation"}},
		{"named", []string{"household.members.eid", "household.members.relation"}, true, []string{
			"household.members.eid", "household.members.relation"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := household()
			minimise.Trim(h.ProtoReflect(), tc.paths)
			if got := minimise.Released(h.ProtoReflect()); !slices.Equal(got, tc.want) {
				t.Errorf("released %v, want %v", got, tc.want)
			}
			ms := h.GetHousehold().GetMembers()
			if len(ms) != 2 || (ms[1].GetEid() != "") != tc.eids {
				t.Errorf("members %v", ms)
			}
		})
	}
}

func TestReleasedListsLeavesAndEmptyMessages(t *testing.T) {
	t.Parallel()
	r := &civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: "BK1", Names: &civilv1.Names{Latin: &jisrv1.Name{Given: "A"}}, Birth: &civilv1.Birth{}}}
	want := []string{"person.birth", "person.eid", "person.names.latin.given"}
	if got := minimise.Released(r.ProtoReflect()); !slices.Equal(got, want) {
		t.Fatalf("released %v, want %v", got, want)
	}
	if got := minimise.Released((&civilv1.GetPersonResponse{}).ProtoReflect()); got != nil {
		t.Fatalf("an empty reply released %v", got)
	}
}
