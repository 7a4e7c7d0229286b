// Package unknownfields drops, from a protobuf message and every message
// inside it, the fields its descriptors do not know, and the enum values
// their enums do not define.
//
// The protobuf module keeps an enum value its enum does not define as the
// field's value (open enums by design, closed ones too: Go does not move
// them to the unknown fields), so an agreed enum field could carry 32 bits
// of the sender's choice. Such a value is unknown here like an unknown
// field: a singular field is cleared, a list loses the element, a map the
// entry, and each counts as one dropped field.
//
// Both sides of the bus use it: the gateway before it minimises a reply
// (gateway/minimise), and the provider-side adapter before a backend's reply
// reaches the bus (services/adapter). It lives in proto so that the adapter
// need not depend on the gateway.
//
// Invariant: after Drop, no message in the tree has unknown fields, nor an
// enum value its enum does not define.
package unknownfields

import (
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Drop clears the unknown fields of m and of every message inside it
// (singular, repeated and map values, at any depth), and the enum values
// their enums do not define, and returns how many fields (and values) it
// dropped.
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
			if vd := fd.MapValue(); (vd.Message() != nil || vd.Enum() != nil) && m.Has(fd) {
				n += dropMap(m.Get(fd).Map(), vd)
			}
		case fd.Kind() == protoreflect.EnumKind:
			if m.Has(fd) {
				n += dropEnum(m, fd, m.Get(fd))
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

// dropMap drops the unknown fields of a map's message values, or the
// entries whose enum value its enum does not define (its own function: a
// counter captured by the Range closure would be allocated on every call
// of Drop).
func dropMap(mp protoreflect.Map, vd protoreflect.FieldDescriptor) int {
	n := 0
	if ed := vd.Enum(); ed != nil {
		e := EnumOf(ed)
		var undefined []protoreflect.MapKey
		mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if !e.Defines(mv.Enum()) {
				undefined = append(undefined, k)
			}
			return true
		})
		for _, k := range undefined {
			mp.Clear(k)
		}
		return len(undefined)
	}
	mp.Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
		n += Drop(mv.Message())
		return true
	})
	return n
}

// dropEnum clears enum field fd of m, holding v, where its value is one
// the enum does not define, or drops such values from the list, and
// returns how many it dropped. Called while ranging over m, it changes
// only fd.
func dropEnum(m protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value) int {
	e := EnumOf(fd.Enum())
	if !fd.IsList() {
		if e.Defines(v.Enum()) {
			return 0
		}
		m.Clear(fd)
		return 1
	}
	l := v.List()
	k := 0
	for i := 0; i < l.Len(); i++ {
		if x := l.Get(i); e.Defines(x.Enum()) {
			if k != i {
				l.Set(k, x)
			}
			k++
		}
	}
	n := l.Len() - k
	if n > 0 {
		l.Truncate(k)
	}
	return n
}

// Enum is the set of numbers one enum defines, built once per enum
// descriptor: a lookup costs a bit test (a map's for numbers outside
// [0, 1024)) and allocates nothing.
type Enum struct {
	dense  []uint64
	sparse map[protoreflect.EnumNumber]struct{}
}

// Defines reports whether the enum defines the number n.
func (e *Enum) Defines(n protoreflect.EnumNumber) bool {
	if uint32(n) < uint32(len(e.dense))*64 {
		return e.dense[n/64]&(1<<(n%64)) != 0
	}
	_, ok := e.sparse[n]
	return ok
}

const maxDenseEnum = 1024

var enums sync.Map // protoreflect.EnumDescriptor → *Enum (by descriptor: another version of an enum may define other values)

// EnumOf returns the set of numbers ed defines.
func EnumOf(ed protoreflect.EnumDescriptor) *Enum {
	if e, ok := enums.Load(ed); ok {
		return e.(*Enum)
	}
	e := &Enum{}
	vals := ed.Values()
	top := -1
	for i := 0; i < vals.Len(); i++ {
		if n := vals.Get(i).Number(); n >= 0 && n < maxDenseEnum && int(n) > top {
			top = int(n)
		}
	}
	e.dense = make([]uint64, (top+64)/64)
	for i := 0; i < vals.Len(); i++ {
		n := vals.Get(i).Number()
		if n >= 0 && n < maxDenseEnum {
			e.dense[n/64] |= 1 << (n % 64)
			continue
		}
		if e.sparse == nil {
			e.sparse = map[protoreflect.EnumNumber]struct{}{}
		}
		e.sparse[n] = struct{}{}
	}
	v, _ := enums.LoadOrStore(ed, e)
	return v.(*Enum)
}

// dropRange is Drop's walk for a message that may hold extensions.
func dropRange(m protoreflect.Message) int {
	n := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if vd := fd.MapValue(); vd.Message() != nil || vd.Enum() != nil {
				n += dropMap(v.Map(), vd)
			}
		case fd.Kind() == protoreflect.EnumKind:
			n += dropEnum(m, fd, v)
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
