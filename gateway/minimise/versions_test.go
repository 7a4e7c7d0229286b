package minimise

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
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
