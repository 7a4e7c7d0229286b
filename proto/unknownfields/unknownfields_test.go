package unknownfields_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/proto/unknownfields"
)

// smuggle gives m two fields no descriptor knows.
func smuggle(m proto.Message, num protowire.Number) {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	b = protowire.AppendString(b, "secret")
	b = protowire.AppendTag(b, num+1, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	m.ProtoReflect().SetUnknown(b)
}

func TestDropAtEveryLevel(t *testing.T) {
	latin := &jisrv1.Name{Given: "Meryem"}
	h := &civilv1.GetHouseholdResponse{Household: &civilv1.Household{Members: []*civilv1.HouseholdMember{
		{Eid: "BK1", BirthDate: &jisrv1.Date{Year: 1990}}, {Eid: "BK2"},
	}}}
	p := &civilv1.GetPersonResponse{Person: &civilv1.Person{Names: &civilv1.Names{Latin: latin}}}
	want := []proto.Message{proto.Clone(h), proto.Clone(p)}
	smuggle(h, 31)
	smuggle(h.Household.Members[1], 40)
	smuggle(h.Household.Members[0].BirthDate, 42)
	smuggle(latin, 50)
	for i, m := range []proto.Message{h, p} {
		if n := unknownfields.Drop(m.ProtoReflect()); n != 6-4*i || !proto.Equal(m, want[i]) {
			t.Fatalf("dropped %d: %v", n, m)
		}
		if n := unknownfields.Drop(m.ProtoReflect()); n != 0 {
			t.Fatalf("second Drop dropped %d", n)
		}
	}
	// A malformed unknown tail counts as one field and is dropped.
	q := &civilv1.Person{Eid: "BK1"}
	q.ProtoReflect().SetUnknown([]byte{0xfa, 0x01, 0x7f})
	if n := unknownfields.Drop(q.ProtoReflect()); n != 1 || len(q.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("malformed tail: dropped %d", n)
	}
}

// A backend's reply with a field its descriptor does not know: Drop removes
// it before the reply goes anywhere.
func ExampleDrop() {
	reply := &civilv1.IsAliveResponse{Alive: true}
	smuggle(reply, 31) // e.g. a newer backend's extra fields

	n := unknownfields.Drop(reply.ProtoReflect())
	b, _ := proto.Marshal(reply)
	fmt.Printf("dropped %d fields, %d bytes left\n", n, len(b))
	// Output: dropped 2 fields, 2 bytes left
}
