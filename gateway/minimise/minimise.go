// Package minimise trims a reply to the fields that were agreed.
//
// Field sets are lists of field paths relative to the response message
// ("person.birth.date"); a path covers its whole subtree. A nil set means
// "no restriction"; an empty non-nil set means "nothing".
//
// Invariant: after Trim, every populated field of the message lies on or
// under an allowed path; nothing outside them can leave the gateway.
package minimise

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// Intersect returns the paths allowed by both sets.
func Intersect(a, b []string) []string {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	out := []string{}
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

// Trim clears every field of m outside paths and returns the paths of what
// is released: each allowed path that is populated (or, without a
// restriction, each populated top-level field).
func Trim(m protoreflect.Message, paths []string) []string {
	var released []string
	if paths == nil {
		m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			released = append(released, string(fd.Name()))
			return true
		})
		slices.Sort(released)
		return released
	}
	trim(m, "", paths, &released)
	slices.Sort(released)
	return slices.Compact(released)
}

func trim(m protoreflect.Message, prefix string, paths []string, released *[]string) {
	var clear []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := prefix + string(fd.Name())
		switch {
		case slices.Contains(paths, p) || slices.ContainsFunc(paths, func(a string) bool { return covers(a, p) }):
			*released = append(*released, p)
		case fd.Message() != nil && !fd.IsMap() && slices.ContainsFunc(paths, func(a string) bool { return covers(p, a) }):
			if fd.IsList() {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					trim(l.Get(i).Message(), p+".", paths, released)
				}
			} else {
				trim(v.Message(), p+".", paths, released)
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
