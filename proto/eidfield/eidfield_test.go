package eidfield_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/jisr-bus/jisr/proto/eidfield"
	"github.com/jisr-bus/jisr/proto/services"
)

// Every method of every ministry service follows the contract: one eID field.
func TestEveryMethodHasOneEIDField(t *testing.T) {
	predicates := 0
	for _, sd := range services.All() {
		if sd.Methods().Len() == 0 {
			t.Errorf("%s has no methods", sd.FullName())
		}
		hasPredicate := false
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			fd, err := eidfield.Lookup(md)
			if err != nil {
				t.Errorf("%s: %v", md.FullName(), err)
				continue
			}
			if fd.Name() != "eid" || fd.Number() != 1 {
				t.Errorf("%s: eID field is %s = %d, want eid = 1", md.FullName(), fd.Name(), fd.Number())
			}
			if eidfield.IsPredicate(md) {
				hasPredicate = true
				predicates++
				if md.Output().Fields().Len() != 1 || md.Output().Fields().Get(0).Kind() != protoreflect.BoolKind {
					t.Errorf("predicate %s must answer with one bool", md.FullName())
				}
			}
		}
		if !hasPredicate {
			t.Errorf("%s has no verify-don't-share predicate method", sd.FullName())
		}
	}
	if predicates < 4 {
		t.Errorf("%d predicates", predicates)
	}
}

func TestLookupRefusesARequestWithoutEID(t *testing.T) {
	// A method whose input is Empty: build a descriptor view through a
	// service that does not exist is overkill; Empty's fields suffice.
	md := fakeMethod{in: (&emptypb.Empty{}).ProtoReflect().Descriptor()}
	if _, err := eidfield.Lookup(md); !errors.Is(err, eidfield.ErrNoEIDField) {
		t.Fatalf("err = %v", err)
	}
}

type fakeMethod struct {
	protoreflect.MethodDescriptor
	in protoreflect.MessageDescriptor
}

func (f fakeMethod) Input() protoreflect.MessageDescriptor { return f.in }
