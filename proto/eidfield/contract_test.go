package eidfield_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/jisr-bus/jisr/proto/eidfield"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// field builds a request field; eid marks it (jisr.v1.eid).
func field(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, repeated, eid bool) *descriptorpb.FieldDescriptorProto {
	label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	if repeated {
		label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	}
	f := &descriptorpb.FieldDescriptorProto{
		Name:     proto.String(name),
		JsonName: proto.String(name),
		Number:   proto.Int32(num),
		Label:    label.Enum(),
		Type:     typ.Enum(),
	}
	if eid {
		f.Options = &descriptorpb.FieldOptions{}
		proto.SetExtension(f.Options, jisrv1.E_Eid, true)
	}
	return f
}

// method compiles a one-method service whose request has the given fields,
// resolving jisr/v1/options.proto from the global registry as a real
// ministry file would, and returns the method.
func method(t *testing.T, predicate bool, fields ...*descriptorpb.FieldDescriptorProto) protoreflect.MethodDescriptor {
	t.Helper()
	var mopts *descriptorpb.MethodOptions
	if predicate {
		mopts = &descriptorpb.MethodOptions{}
		proto.SetExtension(mopts, jisrv1.E_Predicate, true)
	}
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("jisr/test/v1/test.proto"),
		Package:    proto.String("jisr.test.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{jisrv1.File_jisr_v1_options_proto.Path()},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Request"), Field: fields},
			{Name: proto.String("Response")},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Test"),
			Method: []*descriptorpb.MethodDescriptorProto{{
				Name:       proto.String("Check"),
				InputType:  proto.String(".jisr.test.v1.Request"),
				OutputType: proto.String(".jisr.test.v1.Response"),
				Options:    mopts,
			}},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatalf("building test descriptor: %v", err)
	}
	return fd.Services().Get(0).Methods().Get(0)
}

const (
	str = descriptorpb.FieldDescriptorProto_TYPE_STRING
	i64 = descriptorpb.FieldDescriptorProto_TYPE_INT64
)

func TestLookupEnforcesTheContract(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fields []*descriptorpb.FieldDescriptorProto
		want   protoreflect.Name // empty: ErrNoEIDField expected
	}{
		{"one marked string", []*descriptorpb.FieldDescriptorProto{field("eid", 1, str, false, true), field("year", 2, i64, false, false)}, "eid"},
		{"marked field need not be first", []*descriptorpb.FieldDescriptorProto{field("year", 1, i64, false, false), field("citizen", 2, str, false, true)}, "citizen"},
		{"no fields", nil, ""},
		{"string named eid but unmarked", []*descriptorpb.FieldDescriptorProto{field("eid", 1, str, false, false)}, ""},
		{"two marked", []*descriptorpb.FieldDescriptorProto{field("eid", 1, str, false, true), field("spouse_eid", 2, str, false, true)}, ""},
		{"marked int64", []*descriptorpb.FieldDescriptorProto{field("eid", 1, i64, false, true)}, ""},
		{"marked repeated string", []*descriptorpb.FieldDescriptorProto{field("eid", 1, str, true, true)}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := eidfield.Lookup(method(t, false, tc.fields...))
			if tc.want == "" {
				if !errors.Is(err, eidfield.ErrNoEIDField) {
					t.Fatalf("Lookup = %v, %v; want ErrNoEIDField", fd, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if fd.Name() != tc.want {
				t.Fatalf("Lookup = %s, want %s", fd.Name(), tc.want)
			}
		})
	}
}

func TestIsPredicate(t *testing.T) {
	t.Parallel()
	eid := field("eid", 1, str, false, true)
	if !eidfield.IsPredicate(method(t, true, eid)) {
		t.Error("marked method not reported as predicate")
	}
	if eidfield.IsPredicate(method(t, false, eid)) {
		t.Error("unmarked method reported as predicate")
	}
}
