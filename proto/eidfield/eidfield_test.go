package eidfield_test

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/proto/eidfield"
	"github.com/jisr-bus/jisr/proto/services"
)

// Every method of every ministry service follows the contract: one eID field.
func TestEveryMethodHasOneEIDField(t *testing.T) {
	t.Parallel()
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
