package minimise

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// Candidate paths for the equivalence tests: real ones, parents, children,
// prefix look-alikes and paths that name nothing.
var equivPaths = map[string][]string{
	"household": {"household", "household.household_id", "household.members", "household.members.eid",
		"household.members.relation", "household.members.given_name", "household.members.birth_date",
		"household.members.birth_date.year", "household.members.alive", "household.member", "househol", "x"},
	"person": {"person", "person.eid", "person.names", "person.sex", "person.birth", "person.birth.date",
		"person.birth.date.year", "person.vital_status", "person.father_name", "person.mother_name", "person.nam", "y"},
	"file": {"name", "package", "options", "options.go_package", "message_type", "message_type.name",
		"message_type.field", "message_type.field.name", "message_type.nested_type.name", "message_type.nested_type",
		"name_x", "options.go"},
}

func newEquivMsg(kind string) proto.Message {
	switch kind {
	case "household":
		return &civilv1.GetHouseholdResponse{}
	case "person":
		return &civilv1.GetPersonResponse{}
	}
	return &descriptorpb.FileDescriptorProto{}
}

// pick returns the candidate paths mask selects; bit 31 makes the set nil.
func pick(cands []string, mask uint32) []string {
	if mask&(1<<31) != 0 {
		return nil
	}
	out := []string{}
	for i, c := range cands {
		if mask&(1<<i) != 0 {
			out = append(out, c)
		}
	}
	return out
}

// checkEquivalent decodes data as kind and holds the planned Trim,
// ClearNamedOnly and Released to the reflective ones they replaced: the
// same message left, the same paths listed.
func checkEquivalent(t *testing.T, kind string, data []byte, fieldsMask, namedMask uint32) {
	t.Helper()
	a, b := newEquivMsg(kind), newEquivMsg(kind)
	if proto.Unmarshal(data, a) != nil {
		return
	}
	_ = proto.Unmarshal(data, b)
	DropUnknown(a.ProtoReflect())
	DropUnknown(b.ProtoReflect())
	fields, named := pick(equivPaths[kind], fieldsMask), pick(equivPaths[kind], namedMask)
	if ra, rb := refReleased(a.ProtoReflect()), Released(b.ProtoReflect()); !slices.Equal(ra, rb) {
		t.Fatalf("Released before trimming: %v, reference %v", rb, ra)
	}
	wantT := refTrim(a.ProtoReflect(), fields)
	gotT := Trim(b.ProtoReflect(), fields)
	if !slices.Equal(wantT, gotT) {
		t.Fatalf("Trim(%q) listed %v, reference %v", fields, gotT, wantT)
	}
	if !proto.Equal(a, b) {
		t.Fatalf("Trim(%q) left %v, reference %v", fields, b, a)
	}
	refClearNamedOnlyTop(a.ProtoReflect(), named)
	ClearNamedOnly(b.ProtoReflect(), named)
	if !proto.Equal(a, b) {
		t.Fatalf("ClearNamedOnly(%q) left %v, reference %v", named, b, a)
	}
	if ra, rb := refReleased(a.ProtoReflect()), Released(b.ProtoReflect()); !slices.Equal(ra, rb) {
		t.Fatalf("Released %v, reference %v", rb, ra)
	}
}

func equivSeeds() map[string][]byte {
	h := &civilv1.GetHouseholdResponse{Household: &civilv1.Household{HouseholdId: "H-1", Members: []*civilv1.HouseholdMember{
		{Eid: "BK1", Relation: civilv1.Relation_RELATION_HEAD, GivenName: "Meryem", BirthDate: &jisrv1.Date{Year: 1990}, Alive: true},
		{Eid: "BK2", Relation: civilv1.Relation_RELATION_CHILD, GivenName: "Sara", BirthDate: &jisrv1.Date{}},
		{},
	}}}
	p := &civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: "BK1", Names: &civilv1.Names{}, Sex: 1,
		Birth: &civilv1.Birth{Date: &jisrv1.Date{Year: 1990, Month: 2}}, FatherName: "Ali"}}
	f := sample()
	f.MessageType[0].NestedType = []*descriptorpb.DescriptorProto{{Name: proto.String("N"), NestedType: []*descriptorpb.DescriptorProto{{Name: proto.String("NN")}}}}
	out := map[string][]byte{}
	for k, m := range map[string]proto.Message{"household": h, "person": p, "file": f} {
		out[k], _ = proto.Marshal(m)
	}
	return out
}

func TestPlansMatchReference(t *testing.T) {
	t.Parallel()
	for kind, data := range equivSeeds() {
		n := len(equivPaths[kind])
		// Every single path, every pair, nil and empty, as fields and as named.
		masks := []uint32{1 << 31, 0, 1<<n - 1}
		for i := range n {
			masks = append(masks, 1<<i)
			for j := i + 1; j < n; j++ {
				masks = append(masks, 1<<i|1<<j)
			}
		}
		for _, fm := range masks {
			for _, nm := range []uint32{1 << 31, 0, 1<<n - 1, 1 << (fm % uint32(n))} {
				checkEquivalent(t, kind, data, fm, nm)
				checkEquivalent(t, kind, data, nm, fm)
			}
		}
	}
}

// A recursive message nested deeper than the release plans go.
func TestReleasedDeep(t *testing.T) {
	t.Parallel()
	d := &descriptorpb.DescriptorProto{Name: proto.String("leaf")}
	for range 3 * maxPlanDepth {
		d = &descriptorpb.DescriptorProto{NestedType: []*descriptorpb.DescriptorProto{d}}
	}
	f := &descriptorpb.FileDescriptorProto{MessageType: []*descriptorpb.DescriptorProto{d}}
	if got, want := Released(f.ProtoReflect()), refReleased(f.ProtoReflect()); !slices.Equal(got, want) || len(got) != 1 {
		t.Fatalf("Released %v, reference %v", got, want)
	}
}

func FuzzPlansMatchReference(f *testing.F) {
	for kind, data := range equivSeeds() {
		k := map[string]uint8{"household": 0, "person": 1, "file": 2}[kind]
		f.Add(k, data, uint32(0b101), uint32(0b10))
		f.Add(k, data, uint32(1<<31), uint32(0))
	}
	f.Add(uint8(0), protowire.AppendTag(nil, 1, protowire.BytesType), uint32(1), uint32(1))
	kinds := []string{"household", "person", "file"}
	f.Fuzz(func(t *testing.T, k uint8, data []byte, fieldsMask, namedMask uint32) {
		checkEquivalent(t, kinds[int(k)%len(kinds)], data, fieldsMask, namedMask)
	})
}

// BenchmarkTrimReference runs the reflective implementation BenchmarkTrim's
// planned one replaced, on the same message and paths.
func BenchmarkTrimReference(b *testing.B) {
	paths := []string{"name", "options.go_package", "message_type.name"}
	b.ReportAllocs()
	for b.Loop() {
		f := sample()
		refTrim(f.ProtoReflect(), paths)
	}
}

// BenchmarkReplyPath is what the gateway does to a household reply after
// decoding it: Trim, ClearNamedOnly and Released; planned, then reference.
func BenchmarkReplyPath(b *testing.B) {
	data := equivSeeds()["household"]
	fields := []string{"household.household_id", "household.members.relation", "household.members.eid"}
	named := []string{"household.members.eid"}
	for _, impl := range []string{"planned", "reference"} {
		b.Run(impl, func(b *testing.B) {
			m := &civilv1.GetHouseholdResponse{}
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				proto.Reset(m)
				if err := proto.Unmarshal(data, m); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				r := m.ProtoReflect()
				if impl == "planned" {
					Trim(r, fields)
					ClearNamedOnly(r, named)
					_ = Released(r)
				} else {
					refTrim(r, fields)
					refClearNamedOnlyTop(r, named)
					_ = refReleased(r)
				}
			}
		})
	}
}
