package minimise

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// Two federation versions may describe a message of the same name with
// other fields (a ministry's new schema, loaded at run time): each is
// minimised with a plan of its own, never with the other's (whose field
// descriptors do not belong to it).
func TestPlansAreByDescriptorNotByName(t *testing.T) {
	version := func(fields ...string) protoreflect.MessageDescriptor {
		t.Helper()
		msg := &descriptorpb.DescriptorProto{Name: proto.String("Reply")}
		for i, f := range fields {
			msg.Field = append(msg.Field, &descriptorpb.FieldDescriptorProto{Name: proto.String(f), Number: proto.Int32(int32(i + 1)),
				Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()})
		}
		fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{Name: proto.String("x/reply.proto"), Package: proto.String("x"),
			Syntax: proto.String("proto3"), MessageType: []*descriptorpb.DescriptorProto{msg}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return fd.Messages().Get(0)
	}
	fill := func(md protoreflect.MessageDescriptor) protoreflect.Message {
		m := dynamicpb.NewMessage(md)
		for i := 0; i < md.Fields().Len(); i++ {
			m.Set(md.Fields().Get(i), protoreflect.ValueOfString("v"))
		}
		return m
	}
	v1, v2 := version("a", "b"), version("a", "nickname", "b")
	for _, md := range []protoreflect.MessageDescriptor{v1, v2, v1} {
		m := fill(md)
		if got := Trim(m, []string{"a"}); !slices.Equal(got, []string{"a"}) || m.Has(md.Fields().ByName("b")) {
			t.Fatalf("%d fields: released %v", md.Fields().Len(), got)
		}
	}
}

// A later version's message of the same name that adds a named_only field
// has it cleared where no path names it (the first version, without one,
// cached no "nothing named_only here" for the name).
func TestNamedOnlyByDescriptorNotByName(t *testing.T) {
	version := func(namedOnly bool) protoreflect.MessageDescriptor {
		t.Helper()
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String("secret"), Number: proto.Int32(2),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()}
		if namedOnly {
			f.Options = &descriptorpb.FieldOptions{}
			proto.SetExtension(f.Options, jisrv1.E_NamedOnly, true)
		}
		msg := &descriptorpb.DescriptorProto{Name: proto.String("Secret"), Field: []*descriptorpb.FieldDescriptorProto{{Name: proto.String("a"), Number: proto.Int32(1),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()}, f}}
		fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{Name: proto.String("y/secret.proto"), Package: proto.String("y"),
			Syntax: proto.String("proto3"), Dependency: []string{"jisr/v1/options.proto"}, MessageType: []*descriptorpb.DescriptorProto{msg}}, protoregistry.GlobalFiles)
		if err != nil {
			t.Fatal(err)
		}
		return fd.Messages().Get(0)
	}
	for _, v := range []bool{false, true} {
		md := version(v)
		m := dynamicpb.NewMessage(md)
		m.Set(md.Fields().ByName("a"), protoreflect.ValueOfString("v"))
		m.Set(md.Fields().ByName("secret"), protoreflect.ValueOfString("v"))
		ClearNamedOnly(m, nil)
		if m.Has(md.Fields().ByName("secret")) == v {
			t.Fatalf("named_only %v: the field is there after ClearNamedOnly: %v", v, m.Has(md.Fields().ByName("secret")))
		}
	}
}
