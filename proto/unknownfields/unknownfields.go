// Package unknownfields drops, from a protobuf message and every message
// inside it, the fields its descriptors do not know.
//
// Both sides of the bus use it: the gateway before it minimises a reply
// (gateway/minimise), and the provider-side adapter before a backend's reply
// reaches the bus (services/adapter). It lives in proto so that the adapter
// need not depend on the gateway.
//
// Invariant: after Drop, no message in the tree has unknown fields.
package unknownfields

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Drop clears the unknown fields of m and of every message inside it
// (singular, repeated and map values, at any depth) and returns how many
// fields it dropped.
func Drop(m protoreflect.Message) int {
	n := 0
	if u := m.GetUnknown(); len(u) > 0 {
		n += countFields(u)
		m.SetUnknown(nil)
	}
	md := m.Descriptor()
	if md.ExtensionRanges().Len() > 0 {
		return n + dropRange(m) // extensions are populated fields only Range lists
	}
	// The descriptor's fields, not m.Range: Range takes a closure, which
	// costs an allocation per message on every query.
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil && m.Has(fd) {
				n += dropMap(m.Get(fd).Map())
			}
		case fd.Message() == nil:
		case !m.Has(fd):
		case fd.IsList():
			l := m.Get(fd).List()
			for i := 0; i < l.Len(); i++ {
				n += Drop(l.Get(i).Message())
			}
		default:
			n += Drop(m.Get(fd).Message())
		}
	}
	return n
}

// dropMap drops the unknown fields of a map's message values (its own
// function: a counter captured by the Range closure would be allocated on
// every call of Drop).
func dropMap(mp protoreflect.Map) int {
	n := 0
	mp.Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
		n += Drop(mv.Message())
		return true
	})
	return n
}

// dropRange is Drop's walk for a message that may hold extensions.
func dropRange(m protoreflect.Message) int {
	n := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					n += Drop(mv.Message())
					return true
				})
			}
		case fd.Message() == nil:
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				n += Drop(l.Get(i).Message())
			}
		default:
			n += Drop(v.Message())
		}
		return true
	})
	return n
}

// countFields counts the fields in raw wire bytes (at least 1 when there
// are bytes: a malformed tail counts as one field).
func countFields(b []byte) int {
	n := 0
	for len(b) > 0 {
		n++
		_, _, l := protowire.ConsumeField(b)
		if l < 0 {
			break
		}
		b = b[l:]
	}
	return n
}
