// Package minimise trims a reply to the fields that were agreed.
//
// Field sets are lists of field paths relative to the response message
// ("person.birth.date"); a path covers its whole subtree. A nil set means
// "no restriction"; an empty non-nil set means "nothing". A field marked
// (jisr.v1.named_only) is the exception: only a path that names it, or a
// field under it, releases it — neither a path above it nor a nil set does.
//
// Invariant: after DropUnknown and Trim, every populated field of the message
// is one its descriptor knows, holding no enum value its enum does not
// define, and lies on or under an allowed path; nothing outside them can
// leave the gateway.
//
// The gateway minimises a provider's reply with a WirePlan (wire.go): the
// same result, computed in one pass over the reply's bytes without decoding
// it, for the message types it covers. DropUnknown, Trim, ClearNamedOnly
// and Released stay the reflective path (other types, life events) and the
// reference the wire pass is fuzzed against.
package minimise

import (
	"math"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/proto/eidfield"
	"github.com/jisr-bus/jisr/proto/unknownfields"
)

// Intersect returns the paths allowed by both sets.
func Intersect(a, b []string) []string {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	out := make([]string, 0, len(a)+len(b)) // one allocation; never nil
	for _, x := range a {
		for _, y := range b {
			switch {
			case covers(x, y):
				out = append(out, y)
			case covers(y, x):
				out = append(out, x)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// covers reports whether path p covers q (equal, or q lies under p).
func covers(p, q string) bool {
	return p == q || strings.HasPrefix(q, p) && q[len(p)] == '.'
}

// DropUnknown clears the unknown fields of m and of every message inside it
// (singular, repeated and map values, at any depth), and the enum values
// their enums do not define (a singular field cleared, a list's element or
// a map's entry removed), and returns how many it dropped. Fields the
// descriptors do not know are never agreed, and Trim cannot see them: they
// must go before anything is released. An undefined enum value is a number
// the decoder keeps, open enum or closed: in an agreed field it would
// carry 32 bits of the provider's choice.
func DropUnknown(m protoreflect.Message) int {
	return unknownfields.Drop(m)
}

// Trim clears every field of m outside paths and returns the paths of what
// is released: each allowed path that is populated (or, without a
// restriction, each populated top-level field). Call DropUnknown first:
// Trim sees only the fields the descriptors know. What leaves is best
// described by Released on the bytes that are sent.
//
// Trim runs a plan compiled once per message type and set of paths (see
// plan.go): no path is built and no closure allocated per field.
func Trim(m protoreflect.Message, paths []string) []string {
	released := make([]string, 0, 8)
	md := m.Descriptor()
	if paths == nil {
		apply(m, namedOnlyPlan(md, nil))
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			if fd := fields.Get(i); m.Has(fd) {
				released = append(released, string(fd.Name()))
			}
		}
		slices.Sort(released)
		return released
	}
	apply1(m, trimPlan(md, paths), &released)
	slices.Sort(released)
	return slices.Compact(released)
}

// ClearNamedOnly clears every (jisr.v1.named_only) field of m that no path
// of named names; a nil set names none. The gateway calls it with the access
// rule's own fields after Trim: a named_only field (a relative's eID) is
// released only where the rule names it, never because a consent token's
// fields do — one citizen's consent does not reach another.
func ClearNamedOnly(m protoreflect.Message, named []string) {
	apply(m, namedOnlyPlan(m.Descriptor(), named))
}

var namedOnly sync.Map // protoreflect.MessageDescriptor → bool (by descriptor: a later version's message of the same name may differ)

// hasNamedOnly reports whether md, or a message under it (maps aside), has
// a (jisr.v1.named_only) field. Trim does not descend into maps, and a map
// value's named_only field is refused by nothing else, so map values are
// released or cleared whole.
func hasNamedOnly(md protoreflect.MessageDescriptor) bool {
	if v, ok := namedOnly.Load(md); ok {
		return v.(bool)
	}
	found := scanNamedOnly(md, map[protoreflect.FullName]bool{})
	namedOnly.Store(md, found)
	return found
}

func scanNamedOnly(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if eidfield.IsNamedOnly(fd) {
			return true
		}
		if fd.Message() != nil && !fd.IsMap() && scanNamedOnly(fd.Message(), seen) {
			return true
		}
	}
	return false
}

// Released lists the populated fields of m as paths to its leaves: each
// populated scalar, enum, repeated scalar or map field, and each present
// message that holds nothing. Computed on the bytes that leave the gateway
// (decoded again), it is exactly what was released.
func Released(m protoreflect.Message) []string {
	out := make([]string, 0, 8)
	releasedPlanned(m, releasePlan(m.Descriptor()), 0, &out)
	if len(out) == 0 {
		return nil // nothing released: a nil set, as before
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// released is Released below a depth where no plan is kept (a recursive
// message nested deeper than maxPlanDepth): it builds each path.
func released(m protoreflect.Message, prefix string, out *[]string) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := prefix + string(fd.Name())
		if fd.Message() == nil || fd.IsMap() {
			*out = append(*out, p)
			return true
		}
		before := len(*out)
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				released(l.Get(i).Message(), p+".", out)
			}
		} else {
			released(v.Message(), p+".", out)
		}
		if len(*out) == before {
			*out = append(*out, p)
		}
		return true
	})
}

// CanonicalNaN sets every NaN float and double in m, at any depth (lists
// and map values included), to the one NaN the wire pass sends (math.NaN(),
// and float32(math.NaN()) for a float). A NaN's 22 or 51 payload bits mean
// nothing to a reader, and decoding and encoding keep them: without this, a
// provider could pass hidden bits through any agreed float field.
func CanonicalNaN(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if k := fd.MapValue().Kind(); k == protoreflect.FloatKind || k == protoreflect.DoubleKind {
				mp := v.Map()
				mp.Range(func(key protoreflect.MapKey, mv protoreflect.Value) bool {
					if nv, ok := canonicalNaN(k, mv); ok {
						mp.Set(key, nv)
					}
					return true
				})
			} else if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					CanonicalNaN(mv.Message())
					return true
				})
			}
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if fd.Message() != nil {
					CanonicalNaN(l.Get(i).Message())
				} else if nv, ok := canonicalNaN(fd.Kind(), l.Get(i)); ok {
					l.Set(i, nv)
				}
			}
		case fd.Message() != nil:
			CanonicalNaN(v.Message())
		default:
			if nv, ok := canonicalNaN(fd.Kind(), v); ok {
				m.Set(fd, nv)
			}
		}
		return true
	})
}

// canonicalNaN returns the canonical NaN for a NaN value v of kind k.
func canonicalNaN(k protoreflect.Kind, v protoreflect.Value) (protoreflect.Value, bool) {
	switch k {
	case protoreflect.FloatKind:
		if f := v.Float(); f != f && math.Float32bits(float32(f)) != 0x7fc00000 {
			return protoreflect.ValueOfFloat32(math.Float32frombits(0x7fc00000)), true
		}
	case protoreflect.DoubleKind:
		if f := v.Float(); f != f && math.Float64bits(f) != math.Float64bits(math.NaN()) {
			return protoreflect.ValueOfFloat64(math.NaN()), true
		}
	}
	return v, false
}
