package unknownfields_test

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/proto/unknownfields"
)

// enumFile builds, in syntax, a message M with an enum E {0, 1} singular,
// repeated, as a map value, and a message M of its own in a list and a
// map; in proto2, M also has an extension range and two enum extensions.
func enumFile(t *testing.T, syntax string) (protoreflect.MessageDescriptor, protoreflect.FileDescriptor) {
	t.Helper()
	s, i := proto.String, proto.Int32
	opt, rep := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	enum, msg, str := descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum(), descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	pkg := "enumtest." + syntax
	f := func(name string, n int32, l *descriptorpb.FieldDescriptorProto_Label, typ *descriptorpb.FieldDescriptorProto_Type, tn string) *descriptorpb.FieldDescriptorProto {
		fd := &descriptorpb.FieldDescriptorProto{Name: s(name), Number: i(n), Label: l, Type: typ}
		if tn != "" {
			fd.TypeName = s("." + pkg + "." + tn)
		}
		return fd
	}
	entry := func(name, tn string, typ *descriptorpb.FieldDescriptorProto_Type) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{Name: s(name), Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
			Field: []*descriptorpb.FieldDescriptorProto{f("key", 1, opt, str, ""), f("value", 2, opt, typ, tn)}}
	}
	m := &descriptorpb.DescriptorProto{Name: s("M"), Field: []*descriptorpb.FieldDescriptorProto{
		f("e", 1, opt, enum, "E"), f("es", 2, rep, enum, "E"), f("me", 3, rep, msg, "M.MeEntry"),
		f("child", 4, opt, msg, "M"), f("kids", 5, rep, msg, "M"), f("mm", 6, rep, msg, "M.MmEntry"),
	}, NestedType: []*descriptorpb.DescriptorProto{entry("MeEntry", "E", enum), entry("MmEntry", "M", msg)}}
	file := &descriptorpb.FileDescriptorProto{Name: s("enumtest/" + syntax + ".proto"), Package: s(pkg), Syntax: s(syntax),
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: s("E"), Value: []*descriptorpb.EnumValueDescriptorProto{
			{Name: s("E_ZERO"), Number: i(0)}, {Name: s("E_ONE"), Number: i(1)}}}},
		MessageType: []*descriptorpb.DescriptorProto{m}}
	if syntax == "proto2" {
		file.Syntax = nil
		m.ExtensionRange = []*descriptorpb.DescriptorProto_ExtensionRange{{Start: i(100), End: i(200)}}
		ext := f("ext", 100, opt, enum, "E")
		exts := f("exts", 101, rep, enum, "E")
		ext.Extendee, exts.Extendee = s("."+pkg+".M"), s("."+pkg+".M")
		file.Extension = []*descriptorpb.FieldDescriptorProto{ext, exts}
	}
	fd, err := protodesc.NewFile(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Messages().Get(0), fd
}

// TestDropUndefinedEnums: the protobuf module keeps an enum value its enum
// does not define (open or closed alike) as the field's value, where it
// carries 32 bits nobody agreed to. Drop treats it as an unknown field: a
// singular field is cleared, a list loses the element, a map the entry, at
// any depth, each counted once.
func TestDropUndefinedEnums(t *testing.T) {
	for _, syntax := range []string{"proto3", "proto2"} {
		md, fd := enumFile(t, syntax)
		varint := func(b []byte, n protowire.Number, v uint64) []byte {
			return protowire.AppendVarint(protowire.AppendTag(b, n, protowire.VarintType), v)
		}
		bytesF := func(b []byte, n protowire.Number, v []byte) []byte {
			return protowire.AppendBytes(protowire.AppendTag(b, n, protowire.BytesType), v)
		}
		entry := func(k string, v []byte) []byte { return append(bytesF(nil, 1, []byte(k)), v...) }
		// An undefined e (9), es [1, 7, 0, 0xdeadbeef], me {a: 1, b: 5}:
		// 1 + 2 + 1 undefined.
		inner := varint(nil, 1, 9)
		for _, v := range []uint64{1, 7, 0, 0xdeadbeef} {
			inner = varint(inner, 2, v)
		}
		inner = bytesF(inner, 3, entry("a", varint(nil, 2, 1)))
		inner = bytesF(inner, 3, entry("b", varint(nil, 2, 5)))
		// At the top, in child, in a kid, in a map value: 4 × 4.
		b := append(bytesF(nil, 4, inner), inner...)
		b = bytesF(b, 5, inner)
		b = bytesF(b, 6, entry("k", bytesF(nil, 2, inner)))
		want := 16
		if syntax == "proto2" {
			b = varint(b, 100, 3)
			b = varint(varint(b, 101, 1), 101, 4)
			want += 2
		}
		m := dynamicpb.NewMessage(md)
		var types protoregistry.Types
		for i := 0; i < fd.Extensions().Len(); i++ {
			if err := types.RegisterExtension(dynamicpb.NewExtensionType(fd.Extensions().Get(i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := (proto.UnmarshalOptions{Resolver: &types}).Unmarshal(b, m); err != nil {
			t.Fatal(err)
		}
		if n := unknownfields.Drop(m); n != want {
			t.Errorf("%s: dropped %d, want %d", syntax, n, want)
		}
		if n := unknownfields.Drop(m); n != 0 {
			t.Errorf("%s: second Drop dropped %d", syntax, n)
		}
		// What is left: every defined value, in order.
		check := func(m protoreflect.Message, where string) {
			f := md.Fields()
			if m.Has(f.ByName("e")) {
				t.Errorf("%s %s: e kept: %v", syntax, where, m.Get(f.ByName("e")))
			}
			if l := m.Get(f.ByName("es")).List(); l.Len() != 2 || l.Get(0).Enum() != 1 || l.Get(1).Enum() != 0 {
				t.Errorf("%s %s: es %v", syntax, where, l)
			}
			if mp := m.Get(f.ByName("me")).Map(); mp.Len() != 1 || !mp.Has(protoreflect.ValueOfString("a").MapKey()) {
				t.Errorf("%s %s: me %v", syntax, where, mp)
			}
		}
		check(m, "top")
		check(m.Get(md.Fields().ByName("child")).Message(), "child")
		check(m.Get(md.Fields().ByName("kids")).List().Get(0).Message(), "kid")
		check(m.Get(md.Fields().ByName("mm")).Map().Get(protoreflect.ValueOfString("k").MapKey()).Message(), "map value")
		if syntax == "proto2" {
			ext, _ := types.FindExtensionByName("enumtest.proto2.ext")
			exts, _ := types.FindExtensionByName("enumtest.proto2.exts")
			if m.Has(ext.TypeDescriptor()) {
				t.Errorf("ext kept: %v", m.Get(ext.TypeDescriptor()))
			}
			if l := m.Get(exts.TypeDescriptor()).List(); l.Len() != 1 || l.Get(0).Enum() != 1 {
				t.Errorf("exts %v", l)
			}
		}
	}
	// A generated message: an undefined sex is cleared (Person.sex is 3).
	p := &civilv1.Person{}
	if err := proto.Unmarshal(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 0x7e57), p); err != nil {
		t.Fatal(err)
	}
	if n := unknownfields.Drop(p.ProtoReflect()); n != 1 || p.GetSex() != 0 || p.ProtoReflect().Has(p.ProtoReflect().Descriptor().Fields().ByName("sex")) {
		t.Fatalf("dropped %d, sex %v", n, p.GetSex())
	}
}
