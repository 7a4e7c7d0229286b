package minimise

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// A well-known message with nested and repeated sub-messages stands in for
// a ministry reply, so these tests depend on no generated jisr code.
func sample() *descriptorpb.FileDescriptorProto {
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("a.proto"),
		Package: proto.String("pkg"),
		Options: &descriptorpb.FileOptions{GoPackage: proto.String("x"), JavaPackage: proto.String("y")},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("M1"), Field: []*descriptorpb.FieldDescriptorProto{{Name: proto.String("f"), Number: proto.Int32(1)}}},
			{Name: proto.String("M2")},
		},
	}
}

func TestTrim(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		paths    []string
		released []string
		check    func(*descriptorpb.FileDescriptorProto) bool
	}{
		{"no restriction keeps all", nil, []string{"message_type", "name", "options", "package"},
			func(f *descriptorpb.FileDescriptorProto) bool { return proto.Equal(f, sample()) }},
		{"nothing keeps nothing", []string{}, nil,
			func(f *descriptorpb.FileDescriptorProto) bool { return proto.Size(f) == 0 }},
		{"top-level field", []string{"name"}, []string{"name"},
			func(f *descriptorpb.FileDescriptorProto) bool {
				return f.GetName() == "a.proto" && f.Package == nil && f.Options == nil && len(f.MessageType) == 0
			}},
		{"nested field", []string{"options.go_package"}, []string{"options.go_package"},
			func(f *descriptorpb.FileDescriptorProto) bool {
				return f.GetOptions().GetGoPackage() == "x" && f.GetOptions().JavaPackage == nil && f.Name == nil
			}},
		{"repeated sub-message field", []string{"message_type.name"}, []string{"message_type.name"},
			func(f *descriptorpb.FileDescriptorProto) bool {
				return len(f.MessageType) == 2 && f.MessageType[0].GetName() == "M1" && len(f.MessageType[0].Field) == 0
			}},
		{"whole subtree", []string{"options"}, []string{"options"},
			func(f *descriptorpb.FileDescriptorProto) bool {
				return f.GetOptions().GetJavaPackage() == "y" && f.Name == nil
			}},
		{"absent field is not released", []string{"syntax", "name"}, []string{"name"},
			func(f *descriptorpb.FileDescriptorProto) bool { return f.GetName() == "a.proto" }},
		{"prefix lookalike is not a parent", []string{"name_x", "options.go"}, nil,
			func(f *descriptorpb.FileDescriptorProto) bool {
				return proto.Size(f) == 0 || proto.Size(f.Options) == 0 && f.Name == nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := sample()
			got := Trim(f.ProtoReflect(), tc.paths)
			if !reflect.DeepEqual(got, tc.released) && !(len(got) == 0 && len(tc.released) == 0) {
				t.Errorf("released %v, want %v", got, tc.released)
			}
			if !tc.check(f) {
				t.Errorf("trimmed message wrong: %v", f)
			}
		})
	}
}

func TestIntersect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ a, b, want []string }{
		{nil, nil, nil},
		{nil, []string{"x"}, []string{"x"}},
		{[]string{"x"}, nil, []string{"x"}},
		{[]string{"person"}, []string{"person.names", "person.sex"}, []string{"person.names", "person.sex"}},
		{[]string{"person.names.latin"}, []string{"person.names"}, []string{"person.names.latin"}},
		{[]string{"person.name"}, []string{"person.names"}, []string{}},
		{[]string{"a", "b"}, []string{"b", "c"}, []string{"b"}},
	} {
		got := Intersect(tc.a, tc.b)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Intersect(%v, %v) = %#v, want %#v", tc.a, tc.b, got, tc.want)
		}
	}
}

func BenchmarkTrim(b *testing.B) {
	paths := []string{"name", "options.go_package", "message_type.name"}
	b.ReportAllocs()
	for b.Loop() {
		f := sample()
		Trim(f.ProtoReflect(), paths)
	}
}
