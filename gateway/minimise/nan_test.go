package minimise

import (
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestCanonicalNaNOnTheReflectivePath: a reply the wire pass does not
// cover (a map, here a google.protobuf.Struct) is trimmed by decoding and
// encoding it again, which keeps a NaN's payload bits. A provider could
// pass hidden bits through any agreed float or double, at any depth, in
// lists and map values; after CanonicalNaN every NaN is the one NaN.
func TestCanonicalNaNOnTheReflectivePath(t *testing.T) {
	const hidden32, hidden64 = 0xffc0beef, 0x7ff00000deadbeef
	md := testType("proto3")
	tag := func(b []byte, num protowire.Number, wt protowire.Type) []byte { return protowire.AppendTag(b, num, wt) }
	child := protowire.AppendFixed32(tag(nil, 5, protowire.Fixed32Type), hidden32)
	var reply []byte
	reply = protowire.AppendFixed64(tag(reply, 4, protowire.Fixed64Type), hidden64)
	reply = protowire.AppendFixed32(tag(reply, 5, protowire.Fixed32Type), hidden32)
	reply = protowire.AppendBytes(tag(reply, 17, protowire.BytesType), protowire.AppendFixed64(protowire.AppendFixed64(nil, hidden64), 0x4000000000000000))
	reply = protowire.AppendBytes(tag(reply, 12, protowire.BytesType), child)
	reply = protowire.AppendBytes(tag(reply, 13, protowire.BytesType), protowire.AppendFixed64(tag(nil, 4, protowire.Fixed64Type), hidden64))

	m := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(reply, m); err != nil {
		t.Fatal(err)
	}
	Trim(m, []string{"dbl", "flt", "dbls", "child.flt", "kids.dbl"})
	CanonicalNaN(m)
	out, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := nans(t, out)
	if len(got) != 5 {
		t.Fatalf("%d NaNs left in %x, want 5", len(got), out)
	}
	for _, bits := range got {
		if bits != 0x7fc00000 && bits != math.Float64bits(math.NaN()) {
			t.Errorf("a NaN with payload %#x was released in %x", bits, out)
		}
	}

	// A map value: google.protobuf.Struct's fields, a number in each.
	s := &structpb.Struct{Fields: map[string]*structpb.Value{
		"a": structpb.NewNumberValue(math.Float64frombits(hidden64)),
		"b": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewNumberValue(math.Float64frombits(0xfff0000000000001))}}),
	}}
	CanonicalNaN(s.ProtoReflect())
	for _, v := range []float64{s.Fields["a"].GetNumberValue(), s.Fields["b"].GetListValue().Values[0].GetNumberValue()} {
		if math.Float64bits(v) != math.Float64bits(math.NaN()) {
			t.Errorf("a NaN with payload %#x was left in a map value", math.Float64bits(v))
		}
	}
}

// nans returns the bits of every float or double NaN in b, at any depth
// (a length-delimited field is read as a message where it parses as one,
// and as packed fixed64 values otherwise).
func nans(t *testing.T, b []byte) []uint64 {
	t.Helper()
	var out []uint64
	for len(b) > 0 {
		num, wt, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag in %x", b)
		}
		b = b[n:]
		switch wt {
		case protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if math.IsNaN(float64(math.Float32frombits(v))) {
				out = append(out, uint64(v))
			}
			b = b[n:]
		case protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if math.IsNaN(math.Float64frombits(v)) {
				out = append(out, v)
			}
			b = b[n:]
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if num == 17 { // packed doubles
				for len(v) >= 8 {
					x, _ := protowire.ConsumeFixed64(v)
					if math.IsNaN(math.Float64frombits(x)) {
						out = append(out, x)
					}
					v = v[8:]
				}
			} else {
				out = append(out, nans(t, v)...)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, wt, b)
			b = b[n:]
		}
	}
	return out
}
