package minimise

// The reflective implementation that the plans replaced, kept as the
// reference the equivalence tests hold Trim, ClearNamedOnly and Released to.

import (
	"slices"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/proto/eidfield"
)

// Trim clears every field of m outside paths and returns the paths of what
// is released: each allowed path that is populated (or, without a
// restriction, each populated top-level field). Call DropUnknown first:
// Trim sees only the fields the descriptors know. What leaves is best
// described by Released on the bytes that are sent.
func refTrim(m protoreflect.Message, paths []string) []string {
	var released []string
	if paths == nil {
		refClearNamedOnly(m, "", nil)
		m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			released = append(released, string(fd.Name()))
			return true
		})
		slices.Sort(released)
		return released
	}
	refTrimRec(m, "", paths, &released)
	refClearNamedOnly(m, "", paths)
	slices.Sort(released)
	return slices.Compact(released)
}

func refTrimRec(m protoreflect.Message, prefix string, paths []string, released *[]string) {
	var clear []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := prefix + string(fd.Name())
		switch {
		case slices.ContainsFunc(paths, func(a string) bool { return covers(a, p) }):
			*released = append(*released, p)
		case fd.Message() != nil && !fd.IsMap() && slices.ContainsFunc(paths, func(a string) bool { return covers(p, a) }):
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					refTrimRec(l.Get(i).Message(), p+".", paths, released)
				}
			} else {
				refTrimRec(v.Message(), p+".", paths, released)
			}
		default:
			clear = append(clear, fd)
		}
		return true
	})
	for _, fd := range clear {
		m.Clear(fd)
	}
}

// ClearNamedOnly clears every (jisr.v1.named_only) field of m that no path
// of named names; a nil set names none. The gateway calls it with the access
// rule's own fields after Trim: a named_only field (a relative's eID) is
// released only where the rule names it, never because a consent token's
// fields do — one citizen's consent does not reach another.
func refClearNamedOnlyTop(m protoreflect.Message, named []string) {
	refClearNamedOnly(m, "", named)
}

// clearNamedOnly clears every (jisr.v1.named_only) field of m that no path
// names (the path itself or one under it).
func refClearNamedOnly(m protoreflect.Message, prefix string, paths []string) {
	if !hasNamedOnly(m.Descriptor()) {
		return
	}
	var clear []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := prefix + string(fd.Name())
		if eidfield.IsNamedOnly(fd) && !slices.ContainsFunc(paths, func(a string) bool { return covers(p, a) }) {
			clear = append(clear, fd)
			return true
		}
		switch {
		case fd.Message() == nil || fd.IsMap():
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				refClearNamedOnly(l.Get(i).Message(), p+".", paths)
			}
		default:
			refClearNamedOnly(v.Message(), p+".", paths)
		}
		return true
	})
	for _, fd := range clear {
		m.Clear(fd)
	}
}

// Released lists the populated fields of m as paths to its leaves: each
// populated scalar, enum, repeated scalar or map field, and each present
// message that holds nothing. Computed on the bytes that leave the gateway
// (decoded again), it is exactly what was released.
func refReleased(m protoreflect.Message) []string {
	var out []string
	refReleasedRec(m, "", &out)
	slices.Sort(out)
	return slices.Compact(out)
}

func refReleasedRec(m protoreflect.Message, prefix string, out *[]string) {
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
				refReleasedRec(l.Get(i).Message(), p+".", out)
			}
		} else {
			refReleasedRec(v.Message(), p+".", out)
		}
		if len(*out) == before {
			*out = append(*out, p)
		}
		return true
	})
}
