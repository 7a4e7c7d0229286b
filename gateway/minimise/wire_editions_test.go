package minimise

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// editionsType is a message of an editions file with the features that
// change decoding: a string without UTF-8 validation beside one with it,
// implicit presence, a closed enum, expanded lists (packed ones still
// decode), and a named_only field; wide has more than 128 fields (the
// pass's bit sets grow past two words).
func editionsType(t *testing.T, wide bool) protoreflect.MessageDescriptor {
	t.Helper()
	return editionsKinds()[boolInt(wide)]
}

// editionsKinds are the editions types, narrow and wide (built once, so
// the fuzz test can add them to its kinds).
var editionsKinds = sync.OnceValue(func() []protoreflect.MessageDescriptor {
	return []protoreflect.MessageDescriptor{buildEditionsType(false), buildEditionsType(true)}
})

func buildEditionsType(wide bool) protoreflect.MessageDescriptor {
	T := descriptorpb.FieldDescriptorProto_TYPE_INT32
	str, msg, enum := descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, descriptorpb.FieldDescriptorProto_TYPE_ENUM
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	feat := func(f *descriptorpb.FieldDescriptorProto) *descriptorpb.FeatureSet {
		if f.Options == nil {
			f.Options = &descriptorpb.FieldOptions{}
		}
		if f.Options.Features == nil {
			f.Options.Features = &descriptorpb.FeatureSet{}
		}
		return f.Options.Features
	}
	loose := fieldP("loose", 1, str, "")
	feat(loose).Utf8Validation = descriptorpb.FeatureSet_NONE.Enum()
	strict := fieldP("strict", 2, str, "")
	implicit := fieldP("implicit", 3, T, "")
	feat(implicit).FieldPresence = descriptorpb.FeatureSet_IMPLICIT.Enum()
	shade := fieldP("shade", 4, enum, ".wireattack.ed.Shade")
	nums := fieldP("nums", 5, T, "")
	nums.Label = rep
	feat(nums).RepeatedFieldEncoding = descriptorpb.FeatureSet_EXPANDED.Enum()
	shades := fieldP("shades", 6, enum, ".wireattack.ed.Shade")
	shades.Label = rep
	kid := fieldP("kid", 7, msg, ".wireattack.ed.E")
	kids := fieldP("kids", 8, msg, ".wireattack.ed.E")
	kids.Label = rep
	secret := fieldP("secret", 9, str, "")
	feat(secret) // options set below
	proto.SetExtension(secret.Options, jisrv1.E_NamedOnly, true)
	fields := []*descriptorpb.FieldDescriptorProto{loose, strict, implicit, shade, nums, shades, kid, kids, secret}
	name := "E"
	if wide {
		for i := int32(10); i < 150; i++ {
			f := fieldP(fmt.Sprintf("w%d", i), i, T, "")
			if i%7 == 0 {
				f = fieldP(fmt.Sprintf("w%d", i), i, msg, ".wireattack.ed.E")
			}
			fields = append(fields, f)
		}
	}
	file := &descriptorpb.FileDescriptorProto{Name: proto.String(fmt.Sprintf("wireattack/editions_%v.proto", wide)), Package: proto.String("wireattack.ed"),
		Syntax: proto.String("editions"), Edition: descriptorpb.Edition_EDITION_2023.Enum(), Dependency: []string{"jisr/v1/options.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: proto.String("Shade"),
			Options: &descriptorpb.EnumOptions{Features: &descriptorpb.FeatureSet{EnumType: descriptorpb.FeatureSet_CLOSED.Enum()}},
			Value:   []*descriptorpb.EnumValueDescriptorProto{{Name: proto.String("SHADE_DARK"), Number: proto.Int32(1)}, {Name: proto.String("SHADE_LIGHT"), Number: proto.Int32(2)}}}},
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String(name), Field: fields}}}
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	return fd.Messages().Get(0)
}

// TestWireEditionsMatchesReference: the differential check on editions
// types (which the fuzz test's kinds do not include), hostile replies too.
func TestWireEditionsMatchesReference(t *testing.T) {
	t.Parallel()
	for _, wide := range []bool{false, true} {
		md := editionsType(t, wide)
		if WirePlanFor(md, nil, nil) == nil {
			t.Fatalf("%s: no wire plan", md.FullName())
		}
		cands := candidates(md)
		r := rand.New(rand.NewPCG(28, 11))
		n := 1500
		if testing.Short() {
			n = 200
		}
		for j := 0; j < n; j++ {
			fm := r.Uint32() &^ (1 << 31)
			if r.IntN(4) == 0 {
				fm = 1 << 31
			}
			checkWire(t, md, genMessage(r, md, 0, r.IntN(3) == 0), pickPaths(cands, fm), pickPaths(cands, r.Uint32()))
		}
	}
}

func TestWireEditionsAttacks(t *testing.T) {
	t.Parallel()
	md := editionsType(t, false)
	all := []string{"loose", "strict", "implicit", "shade", "nums", "shades", "kid.strict", "kid.loose"}
	// Invalid UTF-8: refused in a validated string, at the top or dropped
	// deep; kept in a string without validation.
	mustRefuse(t, md, bytesF(2, []byte{0xff}), all, nil)
	mustRefuse(t, md, bytesF(8, bytesF(2, []byte{0xff})), []string{"loose"}, nil)
	mustRelease(t, md, bytesF(1, []byte{0xff}), all, nil, "loose")
	mustRelease(t, md, bytesF(7, bytesF(1, []byte{0xfe})), all, nil, "kid.loose")
	// A closed enum's value outside the enum, singular and packed.
	checkWire(t, md, varintF(4, 9), all, nil)
	checkWire(t, md, bytesF(6, []byte{1, 9, 2}), all, nil)
	// Implicit presence: a zero is not released; explicit (the default in
	// editions): it is, where the enum defines it. Shade does not define 0:
	// a 0 there is an undefined value, dropped (TestWireAttackUndefinedEnum).
	mustRelease(t, md, varintF(3, 0), all, nil)
	mustRelease(t, md, varintF(4, 1), all, nil, "shade")
	mustRelease(t, md, varintF(4, 0), all, nil)
	// An expanded list sent packed still decodes.
	mustRelease(t, md, bytesF(5, []byte{1, 2}), all, nil, "nums")
	// Wide: a duplicate singular past field 128, and a message field there.
	wide := editionsType(t, true)
	w := []string{"w141", "w147.implicit", "w133"}
	mustRelease(t, wide, cat(varintF(141, 1), varintF(141, 0), varintF(142, 5)), w, nil, "w141") // explicit presence: the last value, zero, is sent
	mustRelease(t, wide, cat(varintF(141, 1), bytesF(147, varintF(3, 2)), varintF(141, 3), bytesF(147, bytesF(9, []byte("x")))), w, nil, "w141", "w147.implicit")
	mustRelease(t, wide, cat(bytesF(133, nil), bytesF(147, nil)), w, nil, "w133", "w147")
}
