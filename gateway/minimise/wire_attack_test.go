package minimise

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/jisr-bus/jisr/proto/eidfield"
)

// The wire pass against a hostile provider, case by case: beside the
// differential check (checkWire), each case holds the output to the rules
// themselves, so a case fails even where the reference would be wrong in
// the same way: what leaves decodes, carries no unknown field, releases
// only agreed paths (a named_only one only where named), and the released
// paths are exactly those of what leaves.

func tag(num protowire.Number, wt protowire.Type) []byte { return protowire.AppendTag(nil, num, wt) }

func cat(bs ...[]byte) []byte { return slices.Concat(bs...) }

func varintF(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(tag(num, protowire.VarintType), v)
}

func bytesF(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(tag(num, protowire.BytesType), v)
}

// attack runs one hostile reply and returns the wire pass's result (nil
// bytes and the error where it refuses).
func attack(t *testing.T, md protoreflect.MessageDescriptor, data []byte, fields, named []string) ([]byte, []string, error) {
	t.Helper()
	checkWire(t, md, data, fields, named)
	out, rel, _, err := WirePlanFor(md, fields, named).Apply(data)
	if err != nil {
		return nil, nil, err
	}
	got := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(out, got); err != nil {
		t.Fatalf("%x: output %x does not decode: %v", data, out, err)
	}
	if n := DropUnknown(proto.Clone(got).ProtoReflect()); n != 0 {
		t.Fatalf("%x: output %x carries %d unknown fields", data, out, n)
	}
	if want := refReleased(got.ProtoReflect()); !slices.Equal(rel, want) && (len(rel) > 0 || len(want) > 0) {
		t.Fatalf("%x: released %q, but what leaves releases %q", data, rel, want)
	}
	for _, p := range rel {
		if fields != nil && !slices.ContainsFunc(fields, func(a string) bool { return covers(a, p) || covers(p, a) }) {
			t.Fatalf("%x: released %s outside %q", data, p, fields)
		}
	}
	// No named_only value leaves unless both sets name it.
	var walk func(m protoreflect.Message, prefix string)
	walk = func(m protoreflect.Message, prefix string) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := prefix + string(fd.Name())
			if eidfield.IsNamedOnly(fd) && (fields == nil || !slices.ContainsFunc(fields, func(a string) bool { return covers(a, p) || covers(p, a) }) ||
				!slices.ContainsFunc(named, func(a string) bool { return covers(a, p) || covers(p, a) })) {
				t.Fatalf("%x: named_only %s leaves (fields %q named %q)", data, p, fields, named)
			}
			switch {
			case fd.IsList() && fd.Message() != nil:
				for i := 0; i < v.List().Len(); i++ {
					walk(v.List().Get(i).Message(), p+".")
				}
			case fd.Message() != nil:
				walk(v.Message(), p+".")
			}
			return true
		})
	}
	walk(got.ProtoReflect(), "")
	// No enum value its enum does not define leaves: 32 free bits in an
	// agreed field.
	if v, ok := undefinedEnum(got.ProtoReflect()); ok {
		t.Fatalf("%x: output %x carries the undefined enum value %s", data, out, v)
	}
	return out, rel, nil
}

// undefinedEnum finds an enum value, at any depth, that its enum does not
// define.
func undefinedEnum(m protoreflect.Message) (string, bool) {
	var found string
	defined := func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			found = fmt.Sprintf("%s=%d", fd.FullName(), v.Enum())
			return false
		}
		return true
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			return true
		case fd.Kind() == protoreflect.EnumKind && fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				if !defined(fd, v.List().Get(i)) {
					return false
				}
			}
		case fd.Kind() == protoreflect.EnumKind:
			return defined(fd, v)
		case fd.Message() != nil && fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				if s, ok := undefinedEnum(v.List().Get(i).Message()); ok {
					found = s
					return false
				}
			}
		case fd.Message() != nil:
			if s, ok := undefinedEnum(v.Message()); ok {
				found = s
				return false
			}
		}
		return true
	})
	return found, found != ""
}

func mustRefuse(t *testing.T, md protoreflect.MessageDescriptor, data []byte, fields, named []string) {
	t.Helper()
	if _, _, err := attack(t, md, data, fields, named); !errors.Is(err, ErrInvalidReply) {
		t.Fatalf("%x: %v, want ErrInvalidReply", data, err)
	}
}

func mustRelease(t *testing.T, md protoreflect.MessageDescriptor, data []byte, fields, named []string, want ...string) {
	t.Helper()
	_, rel, err := attack(t, md, data, fields, named)
	if err != nil {
		t.Fatalf("%x: %v", data, err)
	}
	if len(want) == 0 {
		want = nil
	}
	if !slices.Equal(rel, want) {
		t.Fatalf("%x fields %q named %q: released %q, want %q", data, fields, named, rel, want)
	}
}

// Field numbers of testType.
const (
	nI32, nOK, nColor, nStr, nRaw, nInts, nStrs, nChild, nKids, nOpt, nSecret, nColors = 1, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 22
)

func TestWireAttackWireTypeConfusion(t *testing.T) {
	t.Parallel()
	md := testType("proto3")
	fields := []string{"i32", "ok", "str", "ints", "child.i32"}
	secret := bytesF(nSecret, []byte("eid-123"))
	// A message field as a varint, fixed32, fixed64: an unknown field.
	mustRelease(t, md, varintF(nChild, 5), fields, nil)
	mustRelease(t, md, protowire.AppendFixed32(tag(nChild, protowire.Fixed32Type), 5), fields, nil)
	mustRelease(t, md, protowire.AppendFixed64(tag(nChild, protowire.Fixed64Type), 5), fields, nil)
	// A string as a varint.
	mustRelease(t, md, varintF(nStr, 7), fields, nil)
	// A scalar as a length-delimited blob that is itself valid protobuf
	// (carrying a named_only field, and an agreed one).
	blob := cat(secret, varintF(nI32, 9))
	mustRelease(t, md, bytesF(nI32, blob), fields, nil)
	mustRelease(t, md, bytesF(nOK, blob), fields, nil)
	// The same blob as the agreed message: only its agreed field leaves.
	mustRelease(t, md, bytesF(nChild, blob), fields, nil, "child.i32")
	// A singular scalar sent packed: unknown (only repeated scalars pack).
	mustRelease(t, md, bytesF(nI32, []byte{1, 2, 3}), fields, nil)
	// A repeated scalar packed, and unpacked, and both.
	mustRelease(t, md, cat(bytesF(nInts, []byte{1, 2}), varintF(nInts, 3)), fields, nil, "ints")
	// An empty packed list releases nothing.
	mustRelease(t, md, bytesF(nInts, nil), fields, nil)
	// A packed list with a truncated varint, a packed fixed list not a
	// multiple of the width: refused.
	mustRefuse(t, md, bytesF(nInts, []byte{1, 0x80}), fields, nil)
	mustRefuse(t, md, bytesF(17, make([]byte, 12)), []string{"dbls"}, nil)
	// Strings and messages have no packed form: a "packed" strs is one
	// string, a "packed" kids one message.
	mustRelease(t, md, bytesF(nStrs, cat(bytesF(1, []byte("a")), bytesF(1, []byte("b")))), []string{"strs"}, nil, "strs")
	// Invalid UTF-8 in a proto3 string, kept or dropped, at any depth: refused.
	mustRefuse(t, md, bytesF(nStr, []byte{0xff}), fields, nil)
	mustRefuse(t, md, bytesF(nStr, []byte{0xff}), []string{"i32"}, nil)
	mustRefuse(t, md, bytesF(nKids, bytesF(nStr, []byte{0xc0})), []string{"i32"}, nil)
	// A wire type 6 or 7, on a known or unknown number: refused.
	mustRefuse(t, md, cat(tag(nI32, 6), []byte{0}), fields, nil)
	mustRefuse(t, md, cat(tag(99, 7), []byte{0}), fields, nil)
}

func TestWireAttackNumbersAndVarints(t *testing.T) {
	t.Parallel()
	md := testType("proto3")
	fields := []string{"i32", "ok", "str"}
	// Field number 0, and numbers past 2^29-1 (the largest one's tag too).
	mustRefuse(t, md, []byte{0x00, 0x01}, fields, nil)
	mustRefuse(t, md, protowire.AppendVarint(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), 1), fields, nil)
	mustRefuse(t, md, protowire.AppendVarint(protowire.AppendVarint(nil, uint64(math.MaxInt32)<<3), 1), fields, nil)
	mustRefuse(t, md, protowire.AppendVarint(protowire.AppendVarint(nil, math.MaxUint64&^7), 1), fields, nil)
	mustRelease(t, md, varintF(protowire.MaxValidNumber, 1), fields, nil) // unknown, valid
	// Overlong varints: eleven bytes, or a tenth byte above 1.
	mustRefuse(t, md, cat(tag(nI32, protowire.VarintType), []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}), fields, nil)
	mustRefuse(t, md, cat(tag(nI32, protowire.VarintType), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}), fields, nil)
	// Non-minimal zeros of implicit-presence scalars release nothing; a
	// value whose low 32 bits are zero is an int32's zero.
	mustRelease(t, md, cat(tag(nOK, protowire.VarintType), []byte{0x80, 0x80, 0x00}), fields, nil)
	mustRelease(t, md, varintF(nI32, 1<<32), fields, nil)
	mustRelease(t, md, cat(tag(nI32, protowire.VarintType), []byte{0x81, 0x80, 0x00}), fields, nil, "i32")
	// A non-minimal tag for a kept field.
	mustRelease(t, md, cat([]byte{byte(nI32<<3) | 0x80, 0x00}, []byte{5}), fields, nil, "i32")
	// Lengths that overflow int on 32 and 64 bits, or run past the end.
	for _, l := range []uint64{1 << 31, 1<<32 + 1, 1 << 63, math.MaxUint64, 4} {
		for _, num := range []protowire.Number{nStr, nChild, nInts, 99} {
			mustRefuse(t, md, cat(protowire.AppendVarint(tag(num, protowire.BytesType), l), []byte("abc")), fields, nil)
		}
	}
}

func TestWireAttackGroups(t *testing.T) {
	t.Parallel()
	md := testType("proto3")
	fields := []string{"i32", "child.i32"}
	secret := bytesF(nSecret, []byte("eid-123"))
	grp := func(num protowire.Number, body []byte) []byte {
		return cat(tag(num, protowire.StartGroupType), body, tag(num, protowire.EndGroupType))
	}
	// A group on a kept message field's number, holding an agreed field
	// and a named_only one: unknown, nothing of it leaves.
	mustRelease(t, md, grp(nChild, cat(varintF(nI32, 1), secret)), fields, nil)
	mustRelease(t, md, grp(nI32, varintF(nI32, 1)), fields, nil)
	// A group inside a kept message and inside a dropped one.
	mustRelease(t, md, bytesF(nChild, cat(grp(77, secret), varintF(nI32, 2))), fields, nil, "child.i32")
	mustRelease(t, md, cat(bytesF(nKids, grp(77, secret)), varintF(nI32, 2)), fields, nil, "i32")
	// An end group with no start, a start with no end, a mismatched end,
	// at the top, in a kept message, in a dropped one: refused.
	for _, bad := range [][]byte{tag(nI32, protowire.EndGroupType), tag(77, protowire.EndGroupType), tag(77, protowire.StartGroupType),
		cat(tag(77, protowire.StartGroupType), tag(78, protowire.EndGroupType))} {
		mustRefuse(t, md, bad, fields, nil)
		mustRefuse(t, md, bytesF(nChild, bad), fields, nil)
		mustRefuse(t, md, bytesF(nKids, bad), fields, nil)
		// Inside an unknown group a length-delimited value is opaque.
		mustRelease(t, md, grp(77, bytesF(nChild, bad)), fields, nil)
	}
}

func TestWireAttackPresenceAndMerging(t *testing.T) {
	t.Parallel()
	md := testType("proto3")
	// proto3 optional: an explicit zero is kept and released; an implicit
	// zero is not.
	out, _, _ := attack(t, md, varintF(nOpt, 0), []string{"opt"}, nil)
	if len(out) == 0 {
		t.Fatal("the explicit zero of a proto3 optional field did not leave")
	}
	mustRelease(t, md, varintF(nOpt, 0), []string{"opt"}, nil, "opt")
	mustRelease(t, md, cat(varintF(nI32, 0), bytesF(nStr, nil)), []string{"i32", "str"}, nil)
	// The last value of a singular scalar wins, zero included.
	mustRelease(t, md, cat(varintF(nI32, 4), varintF(nI32, 0)), []string{"i32"}, nil)
	// Repeated messages where only some elements carry the named_only field.
	secret := bytesF(nSecret, []byte("eid-123"))
	kids := cat(bytesF(nKids, cat(varintF(nI32, 1), secret)), bytesF(nKids, varintF(nI32, 2)), bytesF(nKids, secret))
	mustRelease(t, md, kids, []string{"kids"}, nil, "kids.i32")
	mustRelease(t, md, kids, []string{"kids"}, []string{"kids.i32"}, "kids.i32")
	mustRelease(t, md, kids, []string{"kids"}, []string{"kids.secret"}, "kids.i32") // the agreed set must name it too
	mustRelease(t, md, kids, []string{"kids.i32", "kids.secret"}, []string{"kids.secret"}, "kids.i32", "kids.secret")
	mustRelease(t, md, kids, []string{"kids.secret"}, []string{"kids"}, "kids") // naming an ancestor names no named_only field
	mustRelease(t, md, kids, []string{"kids.i32"}, []string{"kids.secret"}, "kids.i32")
	mustRelease(t, md, kids, nil, []string{"kids.secret"}, "kids.i32")
	// A singular message sent twice: the first occurrence carries a field
	// that only the merge releases; a named_only one in either is dropped.
	twice := cat(bytesF(nChild, cat(varintF(nI32, 3), secret)), bytesF(nChild, bytesF(nStr, []byte("x"))))
	mustRelease(t, md, twice, []string{"child.i32", "child.str"}, nil, "child.i32", "child.str")
	mustRelease(t, md, twice, []string{"child", "child.secret"}, []string{"child.secret"}, "child.i32", "child.secret", "child.str")
	mustRelease(t, md, twice, []string{"child"}, []string{"child.secret"}, "child.i32", "child.str")
	mustRelease(t, md, twice, []string{"child"}, nil, "child.i32", "child.str")
	// The merge is deep: a grandchild in both occurrences.
	deep := cat(bytesF(nChild, bytesF(nChild, varintF(nI32, 1))), bytesF(nChild, bytesF(nChild, secret)))
	mustRelease(t, md, deep, []string{"child.child"}, nil, "child.child.i32")
	// Each occurrence must decode on its own, even where the two together
	// would: a value split across them is refused.
	split := cat(bytesF(nChild, cat(tag(nStr, protowire.BytesType), []byte{2, 'a'})), bytesF(nChild, []byte{'b'}))
	mustRefuse(t, md, split, []string{"child"}, nil)
	mustRefuse(t, md, split, []string{"i32"}, nil)
	// An empty reply, and replies of 0-length messages.
	mustRelease(t, md, nil, []string{"i32"}, nil)
	mustRelease(t, md, []byte{}, nil, nil)
	mustRelease(t, md, bytesF(nChild, nil), []string{"child"}, nil, "child")
	mustRelease(t, md, bytesF(nChild, nil), []string{"child.i32"}, nil, "child")
	mustRelease(t, md, cat(bytesF(nKids, nil), bytesF(nKids, nil)), []string{"kids.i32"}, nil, "kids")
	mustRelease(t, md, bytesF(nChild, nil), []string{"i32"}, nil)
	mustRelease(t, md, bytesF(nChild, nil), []string{}, nil)
}

// TestWireAttackClosedEnum: a proto2 (closed) enum field with a value
// outside the enum. The protobuf module decodes such a value as it is (it
// does not move it to the unknown fields); both paths drop it as unknown
// (TestWireAttackUndefinedEnum), counting the value decoding keeps. What
// is pinned here is that both agree, so a protobuf upgrade that starts
// moving it (then a singular field keeps its last defined value, and each
// undefined occurrence counts) is caught by this test.
func TestWireAttackClosedEnum(t *testing.T) {
	t.Parallel()
	md := testType("proto2")
	if !md.Fields().ByName("color").Enum().IsClosed() {
		t.Fatal("the proto2 enum is not closed")
	}
	for _, data := range [][]byte{varintF(nColor, 7), varintF(nColor, 1<<40), varintF(nColor, 1)} {
		checkWire(t, md, data, []string{"color"}, nil)
		_, wantRel, _, _ := reference(md, data, []string{"color"}, nil)
		_, rel, err := attack(t, md, data, []string{"color"}, nil)
		if err != nil || !slices.Equal(rel, wantRel) {
			t.Fatalf("%x: %q %v, reference %q", data, rel, err, wantRel)
		}
	}
}

// TestWireAttackUndefinedEnum: an enum value its enum does not define,
// open (proto3) or closed (proto2, editions): the protobuf module keeps
// the number as the field's value, so an agreed enum field would carry 32
// bits of the provider's choice to the consumer. Both paths treat it as an
// unknown field: a singular field is dropped as if absent, an element of a
// list is dropped from it, and each counts as one unknown field (the
// value decoding leaves: a singular field's last one), kept or not.
func TestWireAttackUndefinedEnum(t *testing.T) {
	t.Parallel()
	p3, p2, ed := testType("proto3"), testType("proto2"), editionsType(t, false)
	const hidden = uint64(0xdeadbeef) << 32
	packed := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = protowire.AppendVarint(b, v)
		}
		return b
	}
	secret := bytesF(nSecret, []byte("eid-123"))
	for _, c := range []struct {
		name    string
		md      protoreflect.MessageDescriptor
		data    []byte
		fields  []string
		sent    []byte // nil: not checked
		rel     []string
		unknown int
	}{
		{"open", p3, varintF(nColor, 7), []string{"color"}, []byte{}, nil, 1},
		{"open, 32 bits", p3, varintF(nColor, 0xdeadbeef), []string{"color"}, []byte{}, nil, 1},
		{"open, negative", p3, varintF(nColor, math.MaxUint64), []string{"color"}, []byte{}, nil, 1},
		{"open, high bits over an undefined value", p3, varintF(nColor, hidden|7), []string{"color"}, []byte{}, nil, 1},
		{"open, no restriction", p3, cat(varintF(nI32, 3), varintF(nColor, 7)), nil, varintF(nI32, 3), []string{"i32"}, 1},
		{"open, beside an agreed field", p3, cat(varintF(nI32, 3), varintF(nColor, 7)), []string{"i32", "color"}, varintF(nI32, 3), []string{"i32"}, 1},
		{"the last value undefined", p3, cat(varintF(nColor, 1), varintF(nColor, 7)), []string{"color"}, []byte{}, nil, 1},
		{"the last value defined", p3, cat(varintF(nColor, 7), varintF(nColor, 1)), []string{"color"}, varintF(nColor, 1), []string{"color"}, 0},
		{"twice undefined: one value", p3, cat(varintF(nColor, 7), varintF(nColor, 8)), []string{"color"}, []byte{}, nil, 1},
		{"out of order", p3, cat(varintF(nOK, 1), varintF(nColor, 7)), []string{"ok", "color"}, varintF(nOK, 1), []string{"ok"}, 1},
		{"not agreed: still counted", p3, cat(varintF(nI32, 3), varintF(nColor, 7)), []string{"i32"}, varintF(nI32, 3), []string{"i32"}, 1},
		{"not agreed, last value wins", p3, cat(varintF(nColor, 7), varintF(nColor, 1), varintF(nI32, 3)), []string{"i32"}, nil, []string{"i32"}, 0},
		{"in an agreed message", p3, bytesF(nChild, varintF(nColor, 9)), []string{"child.color"}, bytesF(nChild, nil), []string{"child"}, 1},
		{"in a dropped message", p3, cat(bytesF(nKids, cat(varintF(nColor, 9), secret)), varintF(nI32, 2)), []string{"i32"}, varintF(nI32, 2), []string{"i32"}, 1},
		{"in a dropped message, twice", p3, cat(bytesF(nKids, cat(varintF(nColor, 9), varintF(nColor, 1))), varintF(nI32, 2)), []string{"i32"}, varintF(nI32, 2), []string{"i32"}, 0},
		{"in a merged message", p3, cat(bytesF(nChild, varintF(nColor, 1)), bytesF(nChild, varintF(nColor, 9))), []string{"child"}, bytesF(nChild, nil), []string{"child"}, 1},
		{"packed", p3, bytesF(nColors, packed(1, 7, 0, hidden|5, 1)), []string{"colors"}, bytesF(nColors, packed(1, 0, 1)), []string{"colors"}, 2},
		{"packed, none defined", p3, bytesF(nColors, packed(7, 0xdeadbeef)), []string{"colors"}, []byte{}, nil, 2},
		{"packed, not agreed", p3, bytesF(nColors, packed(7, 1, 8)), []string{"i32"}, []byte{}, nil, 2},
		{"packed in chunks", p3, cat(bytesF(nColors, packed(7)), bytesF(nColors, packed(1, 8))), []string{"colors"}, bytesF(nColors, packed(1)), []string{"colors"}, 2},
		{"unpacked where packed", p3, cat(varintF(nColors, 9), varintF(nColors, 1)), []string{"colors"}, bytesF(nColors, packed(1)), []string{"colors"}, 1},
		{"unpacked, none defined", p3, cat(varintF(nColors, 9), varintF(nColors, 3)), []string{"colors"}, []byte{}, nil, 2},
		{"closed", p2, varintF(nColor, 7), []string{"color"}, []byte{}, nil, 1},
		{"closed, explicit zero is defined", p2, varintF(nColor, 0), []string{"color"}, varintF(nColor, 0), []string{"color"}, 0},
		{"closed list", p2, cat(varintF(nColors, 1), varintF(nColors, 7), varintF(nColors, 0)), []string{"colors"}, cat(varintF(nColors, 1), varintF(nColors, 0)), []string{"colors"}, 1},
		{"closed list sent packed", p2, bytesF(nColors, packed(7, 1)), []string{"colors"}, varintF(nColors, 1), []string{"colors"}, 1},
		{"editions closed, no zero", ed, varintF(4, 0), []string{"shade"}, []byte{}, nil, 1},
		{"editions closed list", ed, bytesF(6, packed(1, 9, 2)), []string{"shades"}, bytesF(6, packed(1, 2)), []string{"shades"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, rel, err := attack(t, c.md, c.data, c.fields, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rel, c.rel) {
				t.Errorf("released %q, want %q", rel, c.rel)
			}
			if c.sent != nil && !slices.Equal(out, c.sent) {
				t.Errorf("sent %x, want %x", out, c.sent)
			}
			if _, _, unknown, _ := WirePlanFor(c.md, c.fields, nil).Apply(c.data); unknown != c.unknown {
				t.Errorf("wire pass: %d unknown fields, want %d", unknown, c.unknown)
			}
			if _, _, unknown, _ := reference(c.md, c.data, c.fields, nil); unknown != c.unknown {
				t.Errorf("reference: %d unknown fields, want %d", unknown, c.unknown)
			}
		})
	}
}

// descriptorOf builds a file holding messages from descriptor protos, in
// its own pool (so two versions of one full name can coexist).
func descriptorOf(t *testing.T, file *descriptorpb.FileDescriptorProto) protoreflect.FileDescriptor {
	t.Helper()
	fd, err := protodesc.NewFile(file, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func fieldP(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(),
		Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	return f
}

// TestWireAttackVersions: two federation versions' descriptors of one full
// name, where v2 moved the agreed field to another number and gave the old
// number to a field that is not agreed. Each reply is minimised by its own
// version's plan, however the plans were cached.
func TestWireAttackVersions(t *testing.T) {
	t.Parallel()
	str, msg := descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	file := func(v2 bool) *descriptorpb.FileDescriptorProto {
		pub, priv := int32(1), int32(2)
		if v2 {
			pub, priv = 2, 1
		}
		return &descriptorpb.FileDescriptorProto{Name: proto.String("wireattack/versions.proto"), Package: proto.String("wireattack.v1"),
			Syntax: proto.String("proto3"), MessageType: []*descriptorpb.DescriptorProto{
				{Name: proto.String("Reply"), Field: []*descriptorpb.FieldDescriptorProto{fieldP("inner", 1, msg, ".wireattack.v1.Inner")}},
				{Name: proto.String("Inner"), Field: []*descriptorpb.FieldDescriptorProto{fieldP("public", pub, str, ""), fieldP("private", priv, str, "")}}}}
	}
	v1 := descriptorOf(t, file(false)).Messages().Get(0)
	v2 := descriptorOf(t, file(true)).Messages().Get(0)
	if v1.FullName() != v2.FullName() {
		t.Fatal("not one name")
	}
	fields := []string{"inner.public"}
	p1, p2 := WirePlanFor(v1, fields, nil), WirePlanFor(v2, fields, nil)
	if p1 == p2 {
		t.Fatal("two versions share a plan")
	}
	reply := bytesF(1, cat(bytesF(1, []byte("one")), bytesF(2, []byte("two"))))
	for _, c := range []struct {
		md   protoreflect.MessageDescriptor
		want string
	}{{v1, "one"}, {v2, "two"}, {v1, "one"}} {
		out, rel, err := attack(t, c.md, reply, fields, nil)
		if err != nil || !slices.Equal(rel, fields) {
			t.Fatalf("%s: %q %v", c.md.ParentFile().Path(), rel, err)
		}
		if !strings.Contains(string(out), c.want) || strings.Contains(string(out), map[string]string{"one": "two", "two": "one"}[c.want]) {
			t.Fatalf("version with public=%s sent %q", c.want, out)
		}
	}
}

// TestWireAttackUncoveredAtDepth: a map or a (real) oneof anywhere under
// the reply type, under an agreed path or a dropped one, in a recursive
// type, sends the reply to the reflective path (no wire plan).
func TestWireAttackUncoveredAtDepth(t *testing.T) {
	t.Parallel()
	str, msg, i32 := descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, descriptorpb.FieldDescriptorProto_TYPE_INT32
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	for _, kind := range []string{"map", "oneof"} {
		leaf := &descriptorpb.DescriptorProto{Name: proto.String("Leaf"), Field: []*descriptorpb.FieldDescriptorProto{fieldP("a", 1, str, ""), fieldP("b", 2, i32, "")}}
		if kind == "oneof" {
			leaf.OneofDecl = []*descriptorpb.OneofDescriptorProto{{Name: proto.String("either")}}
			leaf.Field[0].OneofIndex, leaf.Field[1].OneofIndex = proto.Int32(0), proto.Int32(0)
		} else {
			m := fieldP("m", 3, msg, ".wireattack.depth.Leaf.MEntry")
			m.Label = rep
			leaf.Field = append(leaf.Field, m)
			leaf.NestedType = []*descriptorpb.DescriptorProto{{Name: proto.String("MEntry"), Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
				Field: []*descriptorpb.FieldDescriptorProto{fieldP("key", 1, str, ""), fieldP("value", 2, str, "")}}}
		}
		mid := &descriptorpb.DescriptorProto{Name: proto.String("Mid"), Field: []*descriptorpb.FieldDescriptorProto{
			fieldP("x", 1, str, ""), fieldP("self", 2, msg, ".wireattack.depth.Mid"), fieldP("leaf", 3, msg, ".wireattack.depth.Leaf")}}
		top := &descriptorpb.DescriptorProto{Name: proto.String("Top"), Field: []*descriptorpb.FieldDescriptorProto{
			fieldP("y", 1, str, ""), fieldP("mid", 2, msg, ".wireattack.depth.Mid")}}
		fd := descriptorOf(t, &descriptorpb.FileDescriptorProto{Name: proto.String("wireattack/depth_" + kind + ".proto"),
			Package: proto.String("wireattack.depth"), Syntax: proto.String("proto3"), MessageType: []*descriptorpb.DescriptorProto{top, mid, leaf}})
		for _, name := range []string{"Top", "Mid", "Leaf"} {
			md := fd.Messages().ByName(protoreflect.Name(name))
			for _, fields := range [][]string{nil, {"y"}, {"x"}, {}, {"mid.x"}} {
				if WirePlanFor(md, fields, nil) != nil {
					t.Errorf("%s with a %s below: a wire plan for %q", name, kind, fields)
				}
			}
		}
	}
}

// TestWirePlanShared: one plan applied from many goroutines at once, its
// nodes built lazily as replies reach them (run with -race), gives every
// goroutine what a plan of its own gives.
func TestWirePlanShared(t *testing.T) {
	t.Parallel()
	md := testType("proto3")
	secret := bytesF(nSecret, []byte("eid-123"))
	var data [][]byte
	lvl := cat(varintF(nI32, 1), secret)
	for d := 0; d < maxWireDepth-1; d++ {
		lvl = cat(bytesF(nChild, lvl), bytesF(nKids, lvl), varintF(nI32, uint64(d)))
		data = append(data, lvl)
	}
	fields, named := []string{"i32", "child", "kids.child.i32", "kids.kids.secret"}, []string{"kids.kids.secret"}
	want := make([][]byte, len(data))
	for i, b := range data {
		out, _, _, err := (&WirePlan{fields: fields, named: named}).fresh(md).Apply(b)
		if err != nil && !errors.Is(err, ErrTooDeep) {
			t.Fatal(err)
		}
		want[i] = out
	}
	p := (&WirePlan{fields: fields, named: named}).fresh(md)
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for k := 0; k < 50; k++ {
				i := (g + k) % len(data)
				out, _, _, err := p.Apply(data[i])
				if err != nil && !errors.Is(err, ErrTooDeep) || !slices.Equal(out, want[i]) {
					errs <- errors.New("a shared plan differs from a fresh one")
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// fresh gives p its root node for md (a plan outside the cache).
func (p *WirePlan) fresh(md protoreflect.MessageDescriptor) *WirePlan {
	p.root = p.node(wireMsg(md), "", 0)
	return p
}

// TestWireNoCovertBits: what a decoder ignores in a kept value (the high
// bits of an int32, uint32, sint32 or enum varint, a bool's bits past the
// first, padding in a varint, a tag or a length) must not leave: a provider
// could hide there what minimisation removes (a relative's eID in the bits
// of an agreed relation) for a consumer that reads the raw bytes. The
// reflective path re-encoded every value; the wire pass must send each kept
// value in the encoding proto.Marshal gives it.
func TestWireNoCovertBits(t *testing.T) {
	t.Parallel()
	md := testType("proto3")
	const hidden = uint64(0xdeadbeef) << 32
	pad := func(b []byte) []byte { // b's last varint, one byte longer
		b = slices.Clone(b)
		b[len(b)-1] |= 0x80
		return append(b, 0)
	}
	padTag := func(num protowire.Number, wt protowire.Type) []byte { return pad(tag(num, wt)) }
	cases := map[string][]byte{
		"int32 high bits":   varintF(nI32, hidden|5),
		"uint32 high bits":  varintF(16, hidden|5),
		"sint32 high bits":  varintF(19, hidden|6),
		"enum high bits":    varintF(nColor, hidden|1),
		"bool bits":         varintF(nOK, hidden|1),
		"int64 padding":     pad(varintF(2, 6)),
		"tag padding":       protowire.AppendVarint(padTag(nI32, protowire.VarintType), 5),
		"length padding":    cat(tag(nStr, protowire.BytesType), []byte{0x82, 0x00, 'h', 'i'}),
		"packed high bits":  bytesF(nInts, protowire.AppendVarint(protowire.AppendVarint(nil, hidden|1), hidden|2)),
		"packed padding":    bytesF(nInts, []byte{0x81, 0x00, 0x82, 0x80, 0x00}),
		"deep int32":        bytesF(nChild, bytesF(nKids, varintF(nI32, hidden|7))),
		"deep length":       cat(tag(nChild, protowire.BytesType), []byte{0x82, 0x00}, varintF(nI32, 7)),
		"merged int32 bits": cat(varintF(nI32, 1), varintF(nI32, hidden|3)),
		"optional zero":     varintF(nOpt, hidden),
		// The layout is the provider's choice too: field order, how a list
		// is cut into chunks, packed or not, interleaved with other fields.
		"order":              cat(varintF(nOK, 1), varintF(nI32, 5), varintF(5000, 1), bytesF(nStr, []byte("s"))),
		"packed cut":         cat(bytesF(nInts, []byte{1}), bytesF(nInts, []byte{2, 3})),
		"packed and not":     cat(varintF(nInts, 1), bytesF(nInts, []byte{2}), varintF(nInts, 3)),
		"unpacked":           cat(varintF(nInts, 1), varintF(nInts, 2)),
		"fixed cut":          cat(bytesF(17, make([]byte, 8)), protowire.AppendFixed64(tag(17, protowire.Fixed64Type), 1)),
		"interleaved":        cat(bytesF(nKids, varintF(nI32, 1)), varintF(nI32, 1), bytesF(nKids, varintF(nI32, 2)), bytesF(nStrs, []byte("a")), varintF(nI32, 2), bytesF(nStrs, []byte("b"))),
		"deep order":         bytesF(nChild, cat(varintF(nOK, 1), varintF(nI32, 5))),
		"empty chunk":        cat(bytesF(nInts, nil), bytesF(nInts, []byte{1}), bytesF(nInts, nil)),
		"zero out of order":  cat(varintF(nOK, 1), varintF(nI32, 0)),
		"float NaN payload":  protowire.AppendFixed32(tag(5, protowire.Fixed32Type), 0xffc0beef),
		"double NaN payload": protowire.AppendFixed64(tag(4, protowire.Fixed64Type), 0x7ff00000deadbeef),
		"packed NaNs":        bytesF(17, protowire.AppendFixed64(protowire.AppendFixed64(nil, 0xfff0000000000001), 0x4000000000000000)),
	}
	// proto2 lists are not packed: each value is re-encoded in its place.
	p2 := testType("proto2")
	for name, data := range map[string][]byte{
		"unpacked bools":   cat(varintF(20, hidden|1), varintF(20, 2)),
		"unpacked ints":    cat(varintF(nInts, hidden|1), pad(varintF(nInts, 2))),
		"proto2 enum":      varintF(nColor, hidden|1),
		"proto2 explicit":  varintF(nI32, hidden),
		"packed in proto2": cat(bytesF(nInts, []byte{1, 2}), varintF(nInts, 3)),
		"proto2 order":     cat(varintF(20, 1), varintF(nInts, 1), varintF(20, 0)),
	} {
		cases["proto2 "+name] = data
	}
	for name, data := range cases {
		md := md
		if strings.HasPrefix(name, "proto2 ") {
			md = p2
		}
		out, _, err := attack(t, md, data, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := dynamicpb.NewMessage(md)
		if err := proto.Unmarshal(out, got); err != nil {
			t.Fatal(err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(canonNaN(got))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(out, want) {
			t.Errorf("%s: sent %x, but the values encode as %x", name, out, want)
		}
	}
}

// canonNaN sets every NaN float or double at the top of m (the cases put
// them there) to math.NaN(): the one NaN the wire pass sends.
func canonNaN(m proto.Message) proto.Message {
	r := m.ProtoReflect()
	r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() == protoreflect.FloatKind && !fd.IsList() && math.IsNaN(v.Float()):
			r.Set(fd, protoreflect.ValueOfFloat32(float32(math.NaN())))
		case fd.Kind() == protoreflect.DoubleKind && fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				if math.IsNaN(v.List().Get(i).Float()) {
					v.List().Set(i, protoreflect.ValueOfFloat64(math.NaN()))
				}
			}
		case fd.Kind() == protoreflect.DoubleKind && math.IsNaN(v.Float()):
			r.Set(fd, protoreflect.ValueOfFloat64(math.NaN()))
		}
		return true
	})
	return m
}
