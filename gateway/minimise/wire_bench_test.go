package minimise

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// BenchmarkMinimiseReply is the gateway's minimisation step on a reference
// reply (a civil-registry person with both scripts' names, 145 bytes, as the
// bench's backend returns it) trimmed to the amo-enrolment rule's fields:
// the reflective path (decode, DropUnknown, Trim, ClearNamedOnly, marshal,
// decode again, Released) against the wire pass.
func BenchmarkMinimiseReply(b *testing.B) {
	reply, _ := proto.Marshal(&civilv1.GetPersonResponse{Person: &civilv1.Person{
		Eid:           "AB123456",
		Names:         &civilv1.Names{Latin: &jisrv1.Name{Given: "Amina", Family: "El Idrissi"}, Arabic: &jisrv1.Name{Given: "أمينة", Family: "الإدريسي"}},
		Sex:           2,
		Birth:         &civilv1.Birth{Date: &jisrv1.Date{Year: 1984, Month: 3, Day: 9}, Place: &jisrv1.Place{Commune: "Rabat"}},
		VitalStatus:   1,
		MaritalStatus: 2,
		FatherName:    "Mohammed",
		MotherName:    "Fatima",
	}})
	fields := []string{"person.birth", "person.eid", "person.marital_status", "person.names", "person.sex", "person.vital_status"}
	md := (&civilv1.GetPersonResponse{}).ProtoReflect().Descriptor()
	// The gateway decodes a reference ministry's reply as its linked
	// (generated) type, one of a schema loaded at run time as a dynamic
	// message.
	for _, mt := range []protoreflect.MessageType{(&civilv1.GetPersonResponse{}).ProtoReflect().Type(), dynamicpb.NewMessageType(md)} {
		name := "reflective-linked"
		if _, ok := mt.New().Interface().(*dynamicpb.Message); ok {
			name = "reflective-dynamic"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(reply)))
			for b.Loop() {
				out := mt.New().Interface()
				if err := proto.Unmarshal(reply, out); err != nil {
					b.Fatal(err)
				}
				DropUnknown(out.ProtoReflect())
				Trim(out.ProtoReflect(), fields)
				ClearNamedOnly(out.ProtoReflect(), fields)
				sent, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
				if err != nil {
					b.Fatal(err)
				}
				again := mt.New().Interface()
				if err := proto.Unmarshal(sent, again); err != nil {
					b.Fatal(err)
				}
				if len(Released(again.ProtoReflect())) == 0 {
					b.Fatal("nothing released")
				}
			}
		})
	}
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(reply)))
		for b.Loop() {
			p := WirePlanFor(md, fields, fields)
			_, released, _, err := p.Apply(reply)
			if err != nil || len(released) == 0 {
				b.Fatal(err, released)
			}
		}
	})
}
