// Package eidfield finds, in a jisr method's request, the field that carries
// the citizen's eID, and tells predicate methods apart.
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
