package adapter

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
	"github.com/jisr-bus/jisr/proto/unknownfields"
	"github.com/jisr-bus/jisr/services/adapter/adaptertest"
)

// allKinds is a proto3 message with a field of every wire shape: packed
// and unpacked repeated numbers, fixed widths, a map, a nested message, an
// enum, strings and bytes.
var allKinds = func() protoreflect.MessageType {
	s := proto.String
	i := proto.Int32
	lab := func(l descriptorpb.FieldDescriptorProto_Label) *descriptorpb.FieldDescriptorProto_Label { return &l }
	typ := func(t descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto_Type { return &t }
	opt, rep := lab(descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL), lab(descriptorpb.FieldDescriptorProto_LABEL_REPEATED)
	field := func(name string, n int32, l *descriptorpb.FieldDescriptorProto_Label, t descriptorpb.FieldDescriptorProto_Type, tn string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: s(name), Number: i(n), Label: l, Type: typ(t), JsonName: s(name)}
		if tn != "" {
			f.TypeName = s(tn)
		}
		return f
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name: s("wiretest.proto"), Package: s("wiretest"), Syntax: s("proto3"),
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: s("E"), Value: []*descriptorpb.EnumValueDescriptorProto{{Name: s("E_ZERO"), Number: i(0)}, {Name: s("E_ONE"), Number: i(1)}}}},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: s("All"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("s", 1, opt, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
				field("b", 2, opt, descriptorpb.FieldDescriptorProto_TYPE_BYTES, ""),
				field("i", 3, opt, descriptorpb.FieldDescriptorProto_TYPE_SINT64, ""),
				field("f", 4, opt, descriptorpb.FieldDescriptorProto_TYPE_FIXED32, ""),
				field("d", 5, opt, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, ""),
				field("e", 6, opt, descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".wiretest.E"),
				field("packed", 7, rep, descriptorpb.FieldDescriptorProto_TYPE_INT32, ""),
				field("fixed", 8, rep, descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, ""),
				field("floats", 9, rep, descriptorpb.FieldDescriptorProto_TYPE_FLOAT, ""),
				field("names", 10, rep, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
				field("child", 11, opt, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".wiretest.All"),
				field("kids", 12, rep, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".wiretest.All"),
				field("m", 13, rep, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".wiretest.All.MEntry"),
				field("ok", 14, opt, descriptorpb.FieldDescriptorProto_TYPE_BOOL, ""),
			},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name:    s("MEntry"),
				Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				Field: []*descriptorpb.FieldDescriptorProto{
					field("key", 1, opt, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
					field("value", 2, opt, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".wiretest.All"),
				},
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		panic(err)
	}
	return dynamicpb.NewMessageType(fd.Messages().Get(0))
}()

func allKindsMessage(t testing.TB) []byte {
	t.Helper()
	m := allKinds.New()
	fields := m.Descriptor().Fields()
	set := func(name string, v protoreflect.Value) { m.Set(fields.ByName(protoreflect.Name(name)), v) }
	set("s", protoreflect.ValueOfString("Fès — الإدريسي"))
	set("b", protoreflect.ValueOfBytes([]byte{0xff, 0, 1}))
	set("i", protoreflect.ValueOfInt64(-42))
	set("f", protoreflect.ValueOfUint32(7))
	set("d", protoreflect.ValueOfFloat64(3.5))
	set("e", protoreflect.ValueOfEnum(1))
	set("ok", protoreflect.ValueOfBool(true))
	l := m.Mutable(fields.ByName("packed")).List()
	for _, v := range []int32{1, -1, 300, 1 << 30} {
		l.Append(protoreflect.ValueOfInt32(v))
	}
	m.Mutable(fields.ByName("fixed")).List().Append(protoreflect.ValueOfInt64(-5))
	m.Mutable(fields.ByName("floats")).List().Append(protoreflect.ValueOfFloat32(1.5))
	m.Mutable(fields.ByName("names")).List().Append(protoreflect.ValueOfString("a"))
	child := m.Mutable(fields.ByName("child")).Message()
	child.Set(fields.ByName("s"), protoreflect.ValueOfString("child"))
	kid := m.Mutable(fields.ByName("kids")).List().AppendMutable().Message()
	kid.Set(fields.ByName("i"), protoreflect.ValueOfInt64(9))
	mv := m.Mutable(fields.ByName("m")).Map().Mutable(protoreflect.ValueOfString("k").MapKey()).Message()
	mv.Set(fields.ByName("s"), protoreflect.ValueOfString("v"))
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Interface())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// slowKnownFields is knownFields without the wire-level shortcut: what the
// provider side did before it.
func slowKnownFields(mt protoreflect.MessageType, b []byte) (int, error) {
	msg := mt.New().Interface()
	if err := proto.Unmarshal(b, msg); err != nil {
		return 0, err
	}
	return unknownfields.Drop(msg.ProtoReflect()), nil
}

// A payload wireClean passes through untouched is one the decoding path
// would have passed through untouched too; anything unknown, mistyped or
// malformed at any level is left to the decoding path.
func TestWireCleanOnlyPassesWhatDecodingWouldPass(t *testing.T) {
	person := &civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: "AB123456", Names: &civilv1.Names{Latin: &jisrv1.Name{Given: "Amina"}}}}
	clean, _ := proto.Marshal(person)
	smuggled := proto.Clone(person).(*civilv1.GetPersonResponse)
	adaptertest.Smuggle(smuggled.Person.Names.Latin, 99)
	deep, _ := proto.Marshal(smuggled)
	pt := person.ProtoReflect().Type()
	all := allKindsMessage(t)

	wrongType := protowire.AppendTag(nil, 1, protowire.VarintType) // eid is a string
	wrongType = protowire.AppendVarint(wrongType, 1)
	badUTF8 := protowire.AppendTag(nil, 1, protowire.BytesType)
	badUTF8 = protowire.AppendBytes(badUTF8, []byte{0xff, 0xfe})
	group := protowire.AppendTag(nil, 1, protowire.StartGroupType)
	group = protowire.AppendTag(group, 1, protowire.EndGroupType)
	packedScalar := protowire.AppendTag(nil, 3, protowire.BytesType) // sex is not repeated
	packedScalar = protowire.AppendBytes(packedScalar, []byte{1})
	undefinedSex := protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 0x7e57) // an enum value Sex does not define
	undefinedDeep := protowire.AppendVarint(protowire.AppendTag(nil, 6, protowire.VarintType), 7)     // All.e in All.child
	undefinedDeep = protowire.AppendBytes(protowire.AppendTag(nil, 11, protowire.BytesType), undefinedDeep)
	for _, c := range []struct {
		name string
		mt   protoreflect.MessageType
		b    []byte
		want bool
	}{
		{"clean", pt, clean, true},
		{"empty", pt, nil, true},
		{"every wire shape", allKinds, all, true},
		{"unknown field three levels down", pt, deep, false},
		{"truncated", pt, clean[:len(clean)-1], false},
		{"truncated, every wire shape", allKinds, all[:len(all)-3], false},
		{"a known number with another wire type", (&civilv1.Person{}).ProtoReflect().Type(), wrongType, false},
		{"invalid UTF-8 in a string", (&civilv1.Person{}).ProtoReflect().Type(), badUTF8, false},
		{"a group", (&civilv1.Person{}).ProtoReflect().Type(), group, false},
		{"a scalar sent packed", (&civilv1.Person{}).ProtoReflect().Type(), packedScalar, false},
		{"an undefined enum value", (&civilv1.Person{}).ProtoReflect().Type(), undefinedSex, false},
		{"an undefined enum value a level down", allKinds, undefinedDeep, false},
		{"another syntax (structpb is proto3; descriptorpb is proto2)", (&descriptorpb.FileDescriptorProto{}).ProtoReflect().Type(), []byte{}, false},
	} {
		if got := wireClean(c.mt.Descriptor(), c.b, 0); got != c.want {
			t.Errorf("%s: wireClean = %v, want %v", c.name, got, c.want)
		}
		out, n, err := knownFields(c.mt, c.b)
		sn, serr := slowKnownFields(c.mt, c.b)
		if (err != nil) != (serr != nil) || n != sn {
			t.Errorf("%s: knownFields n=%d err=%v, decoding path n=%d err=%v", c.name, n, err, sn, serr)
		}
		if c.want && !bytes.Equal(out, c.b) {
			t.Errorf("%s: a clean payload was rewritten", c.name)
		}
	}
	if !wireClean(allKinds.Descriptor(), all, 0) {
		t.Fatal("the every-shape message is not clean")
	}
	s, _ := structpb.NewStruct(map[string]any{"a": 1.0, "b": []any{"x", true}})
	sb, _ := proto.Marshal(s)
	if !wireClean(s.ProtoReflect().Descriptor(), sb, 0) {
		t.Fatal("a structpb.Struct (maps, oneofs, lists) is not clean")
	}
}

// FuzzWireClean: whatever the bytes, a payload wireClean accepts decodes
// without error and with no unknown field at any level.
func FuzzWireClean(f *testing.F) {
	person := &civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: "AB123456", Names: &civilv1.Names{Latin: &jisrv1.Name{Given: "Amina"}}, Birth: &civilv1.Birth{Date: &jisrv1.Date{Year: 1984}}}}
	b, _ := proto.Marshal(person)
	f.Add(b, false)
	adaptertest.Smuggle(person.Person, 50)
	b, _ = proto.Marshal(person)
	f.Add(b, false)
	f.Add(allKindsMessage(f), true)
	pt := person.ProtoReflect().Type()
	f.Fuzz(func(t *testing.T, b []byte, useAll bool) {
		mt := pt
		if useAll {
			mt = allKinds
		}
		if !wireClean(mt.Descriptor(), b, 0) {
			return
		}
		n, err := slowKnownFields(mt, b)
		if err != nil || n != 0 {
			t.Fatalf("wireClean passed a payload the decoding path finds %d unknown fields in (err %v)", n, err)
		}
	})
}

func getPerson(t testing.TB) *catalog.Method {
	t.Helper()
	fed, err := federation.Parse(bustest.FederationYAML())
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := descset.Services(fed, bustest.Descriptors(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(fed, svcs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cat.ByFullMethod("/jisr.civilregistry.v1.CivilRegistry/GetPerson")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sameAsDecode fails t unless requestEID gives what m.Decode gives.
func sameAsDecode(t *testing.T, m *catalog.Method, b []byte) {
	t.Helper()
	got, gerr := requestEID(m, b)
	_, want, werr := m.Decode(b)
	if got != want || !errors.Is(gerr, werr) || (gerr == nil) != (werr == nil) {
		t.Fatalf("requestEID(%x) = %q, %v; Decode: %q, %v", b, got, gerr, want, werr)
	}
}

// The consumer side reads the request's eID from the wire bytes: the same
// eID, or the same error, as decoding the request.
func TestRequestEIDMatchesDecode(t *testing.T) {
	m := getPerson(t)
	clean, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "AB123456"})
	twice := append(append([]byte{}, clean...), protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "CD654321")...)
	smuggled := &civilv1.GetPersonRequest{Eid: "AB123456"}
	adaptertest.Smuggle(smuggled, 40)
	unknown, _ := proto.Marshal(smuggled)
	for _, b := range [][]byte{clean, twice, nil, {0x0a, 0x00}, unknown, clean[:len(clean)-1], {0x0a, 0x02, 0xff, 0xfe}} {
		sameAsDecode(t, m, b)
	}
	if eid, _ := requestEID(m, twice); eid != "CD654321" {
		t.Fatalf("eID given twice: %q, want the last", eid)
	}
}

func FuzzRequestEID(f *testing.F) {
	m := getPerson(f)
	b, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "AB123456"})
	f.Add(b)
	f.Add(append(b, b...))
	f.Fuzz(func(t *testing.T, b []byte) { sameAsDecode(t, m, b) })
}
