package minimise

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
	healthv1 "github.com/jisr-bus/jisr/proto/gen/jisr/health/v1"
	taxv1 "github.com/jisr-bus/jisr/proto/gen/jisr/tax/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// reference is what the gateway did to a reply before the wire pass, with
// the reflective implementation kept as the reference: decode as a dynamic
// message (the gateway has no ministry code), DropUnknown, Trim,
// ClearNamedOnly, marshal deterministically, decode again, Released.
func reference(md protoreflect.MessageDescriptor, reply []byte, fields, named []string) (sent proto.Message, released []string, unknown int, err error) {
	return referenceAs(dynamicpb.NewMessageType(md), reply, fields, named)
}

// referenceAs is reference with messages of type mt: the gateway decodes
// a reference ministry's reply as its linked (generated) type, and a reply
// of a schema loaded at run time as a dynamic message.
func referenceAs(mt protoreflect.MessageType, reply []byte, fields, named []string) (sent proto.Message, released []string, unknown int, err error) {
	out := mt.New().Interface()
	if err := proto.Unmarshal(reply, out); err != nil {
		return nil, nil, 0, err
	}
	unknown = DropUnknown(out.ProtoReflect())
	refTrim(out.ProtoReflect(), fields)
	refClearNamedOnlyTop(out.ProtoReflect(), named)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(out)
	if err != nil {
		return nil, nil, 0, err
	}
	s := mt.New().Interface()
	if err := proto.Unmarshal(b, s); err != nil {
		return nil, nil, 0, err
	}
	released = refReleased(s.ProtoReflect())
	if len(released) == 0 {
		released = nil
	}
	return s, released, unknown, nil
}

// wireKinds are the message types the differential tests run: the
// reference ministries' replies, and two test types with every scalar kind,
// proto3 optional, packed and unpacked lists (enums among them), recursion, a named_only field
// and a field number past the dense table (proto3 and proto2).
var wireKinds = sync.OnceValue(func() []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	for _, fd := range []protoreflect.FileDescriptor{civilv1.File_jisr_civilregistry_v1_civilregistry_proto,
		cnssv1.File_jisr_cnss_v1_cnss_proto, taxv1.File_jisr_tax_v1_tax_proto, healthv1.File_jisr_health_v1_health_proto} {
		for i := 0; i < fd.Messages().Len(); i++ {
			if md := fd.Messages().Get(i); strings.HasSuffix(string(md.Name()), "Response") {
				out = append(out, md)
			}
		}
	}
	return append(out, testType("proto3"), testType("proto2"))
})

func testType(syntax string) protoreflect.MessageDescriptor {
	T := descriptorpb.FieldDescriptorProto_TYPE_INT32
	opt, rep := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL, descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	var fields []*descriptorpb.FieldDescriptorProto
	add := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label, f func(*descriptorpb.FieldDescriptorProto)) {
		fd := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum()}
		if f != nil {
			f(fd)
		}
		fields = append(fields, fd)
	}
	_ = T
	add("i32", 1, descriptorpb.FieldDescriptorProto_TYPE_INT32, opt, nil)
	add("s64", 2, descriptorpb.FieldDescriptorProto_TYPE_SINT64, opt, nil)
	add("f32", 3, descriptorpb.FieldDescriptorProto_TYPE_FIXED32, opt, nil)
	add("dbl", 4, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, opt, nil)
	add("flt", 5, descriptorpb.FieldDescriptorProto_TYPE_FLOAT, opt, nil)
	add("ok", 6, descriptorpb.FieldDescriptorProto_TYPE_BOOL, opt, nil)
	add("color", 7, descriptorpb.FieldDescriptorProto_TYPE_ENUM, opt, func(f *descriptorpb.FieldDescriptorProto) {
		f.TypeName = proto.String(".wiretest." + syntax + ".Color")
	})
	add("str", 8, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, nil)
	add("raw", 9, descriptorpb.FieldDescriptorProto_TYPE_BYTES, opt, nil)
	add("ints", 10, descriptorpb.FieldDescriptorProto_TYPE_INT32, rep, nil)
	add("strs", 11, descriptorpb.FieldDescriptorProto_TYPE_STRING, rep, nil)
	add("child", 12, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, opt, func(f *descriptorpb.FieldDescriptorProto) { f.TypeName = proto.String(".wiretest." + syntax + ".R") })
	add("kids", 13, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, rep, func(f *descriptorpb.FieldDescriptorProto) { f.TypeName = proto.String(".wiretest." + syntax + ".R") })
	add("secret", 15, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt, func(f *descriptorpb.FieldDescriptorProto) {
		f.Options = &descriptorpb.FieldOptions{}
		proto.SetExtension(f.Options, jisrv1.E_NamedOnly, true)
	})
	add("u32", 16, descriptorpb.FieldDescriptorProto_TYPE_UINT32, opt, nil)
	add("dbls", 17, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, rep, nil)
	add("sf64", 18, descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, opt, nil)
	add("s32", 19, descriptorpb.FieldDescriptorProto_TYPE_SINT32, opt, nil)
	add("far", 5000, descriptorpb.FieldDescriptorProto_TYPE_UINT64, opt, nil)
	add("bools", 20, descriptorpb.FieldDescriptorProto_TYPE_BOOL, rep, nil)
	add("date", 21, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, opt, func(f *descriptorpb.FieldDescriptorProto) { f.TypeName = proto.String(".jisr.v1.Date") })
	add("colors", 22, descriptorpb.FieldDescriptorProto_TYPE_ENUM, rep, func(f *descriptorpb.FieldDescriptorProto) {
		f.TypeName = proto.String(".wiretest." + syntax + ".Color")
	})
	file := &descriptorpb.FileDescriptorProto{Name: proto.String("wiretest/" + syntax + ".proto"), Package: proto.String("wiretest." + syntax),
		Syntax: proto.String(syntax), Dependency: []string{"jisr/v1/options.proto", "jisr/v1/types.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: proto.String("Color"), Value: []*descriptorpb.EnumValueDescriptorProto{
			{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)}, {Name: proto.String("COLOR_RED"), Number: proto.Int32(1)}}}},
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("R"), Field: fields}}}
	if syntax == "proto3" {
		// An explicit-presence scalar: proto3 optional (a synthetic oneof).
		msg := file.MessageType[0]
		msg.Field = append(msg.Field, &descriptorpb.FieldDescriptorProto{Name: proto.String("opt"), Number: proto.Int32(14),
			Type: descriptorpb.FieldDescriptorProto_TYPE_INT32.Enum(), Label: opt.Enum(), OneofIndex: proto.Int32(0), Proto3Optional: proto.Bool(true)})
		msg.OneofDecl = []*descriptorpb.OneofDescriptorProto{{Name: proto.String("_opt")}}
	} else {
		file.Syntax = nil
	}
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	return fd.Messages().Get(0)
}

// candidates are the paths a kind's field sets are drawn from: fields to
// depth 3, with look-alikes and a path that names nothing (at most 30).
func candidates(md protoreflect.MessageDescriptor) []string {
	var out []string
	var walk func(md protoreflect.MessageDescriptor, prefix string, depth int)
	walk = func(md protoreflect.MessageDescriptor, prefix string, depth int) {
		for i := 0; i < md.Fields().Len(); i++ {
			fd := md.Fields().Get(i)
			p := prefix + string(fd.Name())
			out = append(out, p)
			if fd.Message() != nil && depth < 3 {
				walk(fd.Message(), p+".", depth+1)
			}
		}
	}
	walk(md, "", 1)
	// Spread the picks over the depths: every third path past the first 24.
	if len(out) > 24 {
		kept := out[:20:20]
		for i := 20; i < len(out) && len(kept) < 27; i += 3 {
			kept = append(kept, out[i])
		}
		out = kept
	}
	out = append(out, out[0][:len(out[0])-1], out[len(out)-1]+"x", "nothing")
	return out
}

func pickPaths(cands []string, mask uint32) []string {
	if mask&(1<<31) != 0 {
		return nil
	}
	out := []string{}
	for i, c := range cands {
		if i < 31 && mask&(1<<i) != 0 {
			out = append(out, c)
		}
	}
	return out
}

// checkWire holds the wire pass to the reference for one reply and field
// sets.
func checkWire(t *testing.T, md protoreflect.MessageDescriptor, data []byte, fields, named []string) {
	t.Helper()
	want, wantRel, wantUnk, wantErr := reference(md, data, fields, named)
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil && mt.Descriptor() == md {
		// The linked type (protobuf's fast path) must agree with the
		// dynamic one, or the wire pass could match only one of them.
		g, gRel, gUnk, gErr := referenceAs(mt, data, fields, named)
		if (gErr != nil) != (wantErr != nil) {
			t.Fatalf("%s %x: generated type error %v, dynamic %v", md.FullName(), data, gErr, wantErr)
		}
		if gErr == nil {
			gb, _ := proto.MarshalOptions{Deterministic: true}.Marshal(g)
			d := dynamicpb.NewMessage(md)
			if err := proto.Unmarshal(gb, d); err != nil || !proto.Equal(d, want) || !slices.Equal(gRel, wantRel) || gUnk != wantUnk {
				t.Fatalf("%s %x: generated type gives %v %q %d, dynamic %v %q %d", md.FullName(), data, g, gRel, gUnk, want, wantRel, wantUnk)
			}
		}
	}
	p := WirePlanFor(md, fields, named)
	if p == nil {
		t.Fatalf("%s: no wire plan", md.FullName())
	}
	out, rel, unk, err := p.Apply(data)
	if errors.Is(err, ErrTooDeep) {
		return // the caller minimises it with the reference itself
	}
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%s %x fields %q named %q: wire error %v, reference error %v", md.FullName(), data, fields, named, err, wantErr)
	}
	if err != nil {
		return
	}
	got := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(out, got); err != nil {
		t.Fatalf("%s %x: the wire output %x does not decode: %v", md.FullName(), data, out, err)
	}
	// The bytes are those proto.Marshal writes for what they carry: no
	// layout or encoding of the provider's own choice leaves.
	if canon, err := (proto.MarshalOptions{Deterministic: true}).Marshal(got); err != nil || !bytes.Equal(out, canon) {
		t.Fatalf("%s %x fields %q named %q: sent %x, proto.Marshal writes %x", md.FullName(), data, fields, named, out, canon)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("%s %x fields %q named %q:\nwire      %v\nreference %v", md.FullName(), data, fields, named, got, want)
	}
	if !slices.Equal(rel, wantRel) {
		t.Fatalf("%s %x fields %q named %q: released %q, reference %q", md.FullName(), data, fields, named, rel, wantRel)
	}
	if unk != wantUnk {
		t.Fatalf("%s %x: %d unknown fields, reference %d", md.FullName(), data, unk, wantUnk)
	}
	// Values leave re-encoded (a negative int32 sent in 5 bytes leaves in
	// 10, as proto.Marshal writes it), so the output may outgrow the input,
	// but not past twice its size.
	if len(out) > 2*len(data)+8 {
		t.Fatalf("%s %x: output %d bytes, more than twice the input", md.FullName(), data, len(out))
	}
}

// FuzzWireMinimise is the differential fuzz test: for any reply bytes, any
// kind and any field sets drawn from the kind's paths, the wire pass and
// the reflective reference both refuse, or agree on the message sent, the
// paths released and the unknown fields dropped.
//
//	go test ./gateway/minimise -run '^$' -fuzz FuzzWireMinimise -fuzztime 3m
func FuzzWireMinimise(f *testing.F) {
	kinds := append(slices.Clip(wireKinds()), editionsKinds()...)
	for i, md := range kinds {
		r := rand.New(rand.NewPCG(uint64(i), 7))
		for j := 0; j < 3; j++ {
			f.Add(uint8(i), genMessage(r, md, 0, false), r.Uint32(), r.Uint32())
		}
	}
	h := household()
	junk(h, 31)
	junk(h.Household.Members[0], 40)
	b, _ := proto.Marshal(h)
	hi := slices.Index(kinds, h.ProtoReflect().Descriptor())
	f.Add(uint8(hi), b, uint32(0b11100), uint32(0b100))
	f.Add(uint8(hi), append(b, b...), uint32(1<<31), uint32(0b1000))
	f.Add(uint8(0), []byte{0x0a, 0x02, 0xfa, 0x01}, uint32(1), uint32(0))
	f.Add(uint8(0), []byte{}, uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, kind uint8, data []byte, fieldsMask, namedMask uint32) {
		md := kinds[int(kind)%len(kinds)]
		cands := candidates(md)
		checkWire(t, md, data, pickPaths(cands, fieldsMask), pickPaths(cands, namedMask))
	})
}

// TestWireMatchesReference runs the differential check on generated
// replies, valid and hostile (duplicates, unknown fields and wire types,
// explicit zeros, bad UTF-8, truncation), for every kind: the part of the
// fuzz test that every `go test` runs.
func TestWireMatchesReference(t *testing.T) {
	t.Parallel()
	n := 2000
	if testing.Short() {
		n = 300
	}
	r := rand.New(rand.NewPCG(14, 14))
	for i, md := range wireKinds() {
		cands := candidates(md)
		for j := 0; j < n/4+n*boolInt(i >= len(wireKinds())-2); j++ {
			data := genMessage(r, md, 0, r.IntN(4) == 0)
			var fm, nm uint32
			switch r.IntN(4) {
			case 0:
				fm = 1 << 31
			default:
				fm = r.Uint32() &^ (1 << 31)
			}
			if r.IntN(3) > 0 {
				nm = r.Uint32()
			}
			checkWire(t, md, data, pickPaths(cands, fm), pickPaths(cands, nm))
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestWireRecursionLimit: a reply nested as deep as proto.Unmarshal allows
// is minimised where the deep part is dropped, one level deeper is refused,
// as the reference does; where the deep part is kept, past the plan's depth
// the wire pass hands the reply to the reflective path (ErrTooDeep).
func TestWireRecursionLimit(t *testing.T) {
	t.Parallel()
	md := testType("proto3")
	child := md.Fields().ByName("child").Number()
	nest := func(levels int) []byte {
		b := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5)
		for i := 1; i < levels; i++ {
			b = protowire.AppendBytes(protowire.AppendTag(nil, child, protowire.BytesType), b)
		}
		return b
	}
	for _, levels := range []int{maxWireDepth - 1, maxWireDepth, maxWireDepth + 1, recursionLimit, recursionLimit + 1} {
		data := nest(levels)
		_, _, _, refErr := reference(md, data, []string{"i32"}, nil)
		if (refErr != nil) != (levels > recursionLimit) {
			t.Fatalf("%d levels: reference %v", levels, refErr)
		}
		checkWire(t, md, data, []string{"i32"}, nil)
		_, _, _, err := WirePlanFor(md, []string{"i32"}, nil).Apply(data)
		if (err != nil) != (levels > recursionLimit) {
			t.Fatalf("%d levels, deep part dropped: %v", levels, err)
		}
		if levels > maxWireDepth+1 {
			continue // the reference is slow this deep
		}
		checkWire(t, md, data, nil, nil)
		_, _, _, err = WirePlanFor(md, nil, nil).Apply(data)
		if deep := levels > maxWireDepth; deep != errors.Is(err, ErrTooDeep) || !deep && err != nil {
			t.Fatalf("%d levels, kept: %v", levels, err)
		}
	}
}

// TestWireNotForUncoveredTypes: a type with a map, a oneof, a group, an
// extension range or a required field (here, descriptor.proto's, whose
// options have extension ranges) gets no wire plan: the gateway then uses
// the reflective path.
func TestWireNotForUncoveredTypes(t *testing.T) {
	t.Parallel()
	for _, m := range []proto.Message{&descriptorpb.FileDescriptorProto{}, &descriptorpb.FieldOptions{}} {
		if WirePlanFor(m.ProtoReflect().Descriptor(), nil, nil) != nil {
			t.Errorf("%T has a wire plan", m)
		}
	}
	for _, md := range wireKinds() {
		if WirePlanFor(md, nil, nil) == nil {
			t.Errorf("%s has no wire plan", md.FullName())
		}
	}
}

// genMessage writes a random encoding of md: known fields with values of
// every shape (zeros, extremes, packed and not), unknown fields, wrong wire
// types, duplicated singular fields; hostile adds invalid UTF-8, overlong
// or truncated values and group markers.
func genMessage(r *rand.Rand, md protoreflect.MessageDescriptor, depth int, hostile bool) []byte {
	var b []byte
	fields := md.Fields()
	for k := r.IntN(8); k > 0; k-- {
		if r.IntN(10) == 0 || fields.Len() == 0 {
			num := protowire.Number(100 + r.IntN(50))
			switch r.IntN(4) {
			case 0:
				b = protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), r.Uint64())
			case 1:
				b = protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), "unknown")
			case 2:
				b = protowire.AppendFixed32(protowire.AppendTag(b, num, protowire.Fixed32Type), r.Uint32())
			default:
				b = protowire.AppendTag(b, num, protowire.StartGroupType)
				b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), 1)
				b = protowire.AppendTag(b, num, protowire.EndGroupType)
			}
			continue
		}
		fd := fields.Get(r.IntN(fields.Len()))
		times := 1
		if r.IntN(6) == 0 {
			times = 2
		}
		for ; times > 0; times-- {
			b = genField(r, b, fd, depth, hostile)
		}
	}
	if hostile && len(b) > 0 && r.IntN(8) == 0 {
		b = b[:r.IntN(len(b))]
	}
	return b
}

func genField(r *rand.Rand, b []byte, fd protoreflect.FieldDescriptor, depth int, hostile bool) []byte {
	num := fd.Number()
	if r.IntN(20) == 0 { // a wire type the field does not have
		return protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), r.Uint64())
	}
	if hostile && r.IntN(40) == 0 {
		return protowire.AppendTag(b, num, protowire.Type(3+r.IntN(5)))
	}
	varint := func() uint64 {
		return []uint64{0, 1, 2, 127, 128, 1 << 31, 1 << 32, math.MaxUint64, r.Uint64()}[r.IntN(9)]
	}
	scalar := func(b []byte) []byte {
		switch fd.Kind() {
		case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
			return protowire.AppendFixed32(b, []uint32{0, 1, 0x80000000, 0x7fc00000, r.Uint32()}[r.IntN(5)])
		case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
			return protowire.AppendFixed64(b, []uint64{0, 1, 1 << 63, 0x7ff8000000000001, r.Uint64()}[r.IntN(5)])
		}
		v := varint()
		if hostile && r.IntN(20) == 0 {
			return append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f) // overflow
		}
		if r.IntN(10) == 0 { // an overlong but valid encoding
			e := protowire.AppendVarint(nil, v)
			if len(e) < 10 {
				e[len(e)-1] |= 0x80
				e = append(e, 0)
			}
			return append(b, e...)
		}
		return protowire.AppendVarint(b, v)
	}
	switch fd.Kind() {
	case protoreflect.MessageKind:
		var v []byte
		if depth < 4 {
			v = genMessage(r, fd.Message(), depth+1, hostile)
		}
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	case protoreflect.StringKind, protoreflect.BytesKind:
		s := []string{"", "a", "Meryem", "héllo", strings.Repeat("x", 200)}[r.IntN(5)]
		if hostile && r.IntN(6) == 0 {
			s = "bad\xff"
		}
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
	}
	wt := protowire.VarintType
	switch fd.Kind() {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		wt = protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		wt = protowire.Fixed64Type
	}
	if fd.IsList() && r.IntN(2) == 0 { // packed: 0 to 3 values
		var v []byte
		for k := r.IntN(4); k > 0; k-- {
			v = scalar(v)
		}
		if hostile && len(v) > 0 && r.IntN(6) == 0 {
			v = v[:len(v)-1]
		}
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	if !fd.IsList() && r.IntN(30) == 0 { // packed bytes for a singular scalar: unknown
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), scalar(nil))
	}
	return scalar(protowire.AppendTag(b, num, wt))
}

// household is the household reply of the package's other tests, here
// without their package.
func household() *civilv1.GetHouseholdResponse {
	return &civilv1.GetHouseholdResponse{Household: &civilv1.Household{HouseholdId: "H-1", Members: []*civilv1.HouseholdMember{
		{Eid: "BK1", Relation: civilv1.Relation_RELATION_HEAD, GivenName: "Meryem", BirthDate: &jisrv1.Date{Year: 1990}},
		{Eid: "BK2", Relation: civilv1.Relation_RELATION_CHILD, GivenName: "Sara"},
	}}}
}

func junk(m proto.Message, num protowire.Number) {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	b = protowire.AppendString(b, "secret")
	b = protowire.AppendTag(b, num+1, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 7)
	m.ProtoReflect().SetUnknown(b)
}

var _ = fmt.Sprint

// TestWirePlansAreByFieldSets: each pair of field sets has its own plan,
// whatever bytes the paths hold (a plan of other sets would release other
// fields), and a pair's plan is compiled once.
func TestWirePlansAreByFieldSets(t *testing.T) {
	// Not parallel: the cache is bounded (maxPlans), and the other tests'
	// field sets — the fuzz corpora's above all — may have filled it, when
	// a plan is compiled each time. It starts empty here; no parallel test
	// runs while this one does.
	wirePlans.Lock()
	wirePlans.m, wirePlans.n = map[protoreflect.MessageDescriptor]map[string]*WirePlan{}, 0
	wirePlans.Unlock()
	md := (&civilv1.GetPersonResponse{}).ProtoReflect().Descriptor()
	sets := [][2][]string{{nil, nil}, {{}, nil}, {nil, {}}, {{}, {}}, {{"person.eid"}, nil}, {{"person.eid"}, {}},
		{{"person.eid\x01"}, nil}, {{"person.eid", ""}, nil}, {{"person.eid\xfe"}, nil}, {{"person"}, {"eid"}},
		{{"person", "eid"}, nil}, {{"person\x00eid"}, nil}, {{"person\x01\x00eid"}, nil}, {{"person"}, {"\xff"}},
		{{"person"}, {"eid\x01"}}, {{"person\x01\x00eid"}, {}}}
	seen := map[*WirePlan]int{}
	for i, s := range sets {
		p := WirePlanFor(md, s[0], s[1])
		if j, dup := seen[p]; dup {
			t.Fatalf("%q and %q share a plan", sets[j], s)
		}
		seen[p] = i
		if WirePlanFor(md, s[0], s[1]) != p {
			t.Fatalf("%q: compiled again", s)
		}
	}
}

// TestTrimPlansAreByFieldSets: Trim's plans are kept by a key no other set
// of paths shares (it once joined the paths with a zero byte, so that
// ["household", "x"] and ["household\x00x"] shared one plan).
func TestTrimPlansAreByFieldSets(t *testing.T) {
	t.Parallel()
	for _, paths := range [][]string{{"household.household_id", "x"}, {"household.household_id\x00x"}} {
		h := household()
		released := Trim(h.ProtoReflect(), paths)
		if want := paths[0] == "household.household_id"; (len(released) > 0) != want {
			t.Fatalf("Trim(%q) released %q", paths, released)
		}
	}
}
