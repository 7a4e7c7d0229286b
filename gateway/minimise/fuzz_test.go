package minimise_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/gateway/minimise"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// FuzzReplyMinimisation feeds arbitrary provider bytes through what the
// gateway does to a reply: after DropUnknown and Trim, the bytes that leave
// carry no unknown field at any level, and every released leaf lies under
// an allowed path (a relative's eID only where named).
func FuzzReplyMinimisation(f *testing.F) {
	h := household()
	junk(h, 31)
	junk(h.Household.Members[0], 40)
	b, _ := proto.Marshal(h)
	f.Add(b)
	f.Add([]byte{0x0a, 0x02, 0xfa, 0x01})
	f.Add([]byte{})
	paths := []string{"household.household_id", "household.members.relation"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r civilv1.GetHouseholdResponse
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		minimise.DropUnknown(r.ProtoReflect())
		minimise.Trim(r.ProtoReflect(), paths)
		out, err := proto.MarshalOptions{Deterministic: true}.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		var sent civilv1.GetHouseholdResponse
		if err := proto.Unmarshal(out, &sent); err != nil {
			t.Fatal(err)
		}
		if n := minimise.DropUnknown(proto.Clone(&sent).ProtoReflect()); n != 0 {
			t.Fatalf("%d unknown fields left in %x", n, out)
		}
		for _, p := range minimise.Released(sent.ProtoReflect()) {
			if !slices.ContainsFunc(paths, func(a string) bool { return p == a || strings.HasPrefix(p, a+".") || strings.HasPrefix(a, p+".") }) {
				t.Fatalf("released %s outside %v", p, paths)
			}
		}
	})
}
