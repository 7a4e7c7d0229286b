// Package eidfield finds, in a jisr method's request, the field that carries
// the citizen's eID, tells predicate methods apart, and reads jisr's other
// field options (a predicate's parameters, fields released only when named).
//
// Invariant: Lookup succeeds only for a request with exactly one top-level,
// singular string field marked (jisr.v1.eid) — the contract every ministry
// service follows, checked for the whole catalog at start.
package eidfield

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// ErrNoEIDField is returned when a request has no, or more than one, eID field.
var ErrNoEIDField = errors.New("eidfield: a request needs exactly one string field marked (jisr.v1.eid)")

// Lookup returns the eID field of md's request message.
func Lookup(md protoreflect.MethodDescriptor) (protoreflect.FieldDescriptor, error) {
	in := md.Input()
	var found protoreflect.FieldDescriptor
	fields := in.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		opts, ok := fd.Options().(*descriptorpb.FieldOptions)
		if !ok || opts == nil || !proto.GetExtension(opts, jisrv1.E_Eid).(bool) {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%w: %s has two (%s, %s)", ErrNoEIDField, in.FullName(), found.Name(), fd.Name())
		}
		if fd.Kind() != protoreflect.StringKind || fd.Cardinality() == protoreflect.Repeated {
			return nil, fmt.Errorf("%w: %s.%s is not a singular string", ErrNoEIDField, in.FullName(), fd.Name())
		}
		found = fd
	}
	if found == nil {
		return nil, fmt.Errorf("%w: %s has none", ErrNoEIDField, in.FullName())
	}
	return found, nil
}

// IsPredicate reports whether md is marked (jisr.v1.predicate).
func IsPredicate(md protoreflect.MethodDescriptor) bool {
	opts, ok := md.Options().(*descriptorpb.MethodOptions)
	return ok && opts != nil && proto.GetExtension(opts, jisrv1.E_Predicate).(bool)
}

// IsParameter reports whether fd is marked (jisr.v1.parameter): a predicate's
// parameter, whose value the access rule fixes.
func IsParameter(fd protoreflect.FieldDescriptor) bool {
	return fieldOption(fd, jisrv1.E_Parameter)
}

// IsNamedOnly reports whether fd is marked (jisr.v1.named_only): released
// only where an access rule names it (or a field under it).
func IsNamedOnly(fd protoreflect.FieldDescriptor) bool {
	return fieldOption(fd, jisrv1.E_NamedOnly)
}

func fieldOption(fd protoreflect.FieldDescriptor, xt protoreflect.ExtensionType) bool {
	opts, ok := fd.Options().(*descriptorpb.FieldOptions)
	return ok && opts != nil && proto.GetExtension(opts, xt).(bool)
}
