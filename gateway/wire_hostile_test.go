package gateway_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/minimise"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// TestHostileWireReply: a provider on the bus (no adapter in between)
// answers GetHousehold, to a token limited to household.members.relation,
// with hand-made bytes aimed at the wire-level minimiser: the household
// sent twice (the relatives' eIDs, named_only, and a household id in the
// first occurrence), a member sent as a group, a relation sent as a
// length-delimited blob that is itself a valid member, the household as a
// fixed64, and an unknown group holding an eID. Only the relations leave,
// and the audit record's released paths are exactly those of the bytes
// the consumer receives, which hide nothing in the values' encoding.
func TestHostileWireReply(t *testing.T) {
	t.Parallel()
	// HouseholdMember: eid 1, relation 2, given_name 3, birth_date 4;
	// Household: household_id 1, members 2; GetHouseholdResponse:
	// household 1.
	// The spouse's relation carries 32 hidden bits (a decoder reads the
	// low 32 of an enum's varint).
	spouse := varint(str(nil, 1, "RELATIVE1"), 2, 0x4b345678<<32|uint64(civilv1.Relation_RELATION_SPOUSE))
	first := msg(str(nil, 1, "H-SECRET"), 2, spouse)
	head := varint(str(nil, 3, "Fatima"), 2, uint64(civilv1.Relation_RELATION_HEAD))
	head = msg(head, 2, str(nil, 1, "RELATIVE4")) // relation as a blob
	second := msg(nil, 2, head)
	second = varint(second, 2, 7) // members as a varint
	second = protowire.AppendTag(second, 2, protowire.StartGroupType)
	second = str(second, 1, "RELATIVE2")
	second = protowire.AppendTag(second, 2, protowire.EndGroupType)
	reply := msg(nil, 1, first)
	reply = protowire.AppendFixed64(protowire.AppendTag(reply, 1, protowire.Fixed64Type), 1)
	reply = protowire.AppendTag(reply, 9, protowire.StartGroupType)
	reply = str(reply, 1, "RELATIVE3")
	reply = protowire.AppendTag(reply, 9, protowire.EndGroupType)
	reply = msg(reply, 1, second)

	got, audit, err := askHousehold(t, reply)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"RELATIVE", "H-SECRET", "Fatima"} {
		if strings.Contains(string(got), bad) {
			t.Fatalf("released %q: %x", bad, got)
		}
	}
	var resp civilv1.GetHouseholdResponse
	if err := proto.Unmarshal(got, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.ProtoReflect().GetUnknown()) != 0 || len(resp.GetHousehold().ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("unknown fields left: %x", got)
	}
	ms := resp.GetHousehold().GetMembers()
	if len(ms) != 2 || ms[0].GetRelation() != civilv1.Relation_RELATION_SPOUSE || ms[1].GetRelation() != civilv1.Relation_RELATION_HEAD {
		t.Fatalf("the merged household's relations: %v", &resp)
	}
	if canon, _ := (proto.MarshalOptions{Deterministic: true}).Marshal(&resp); !bytes.Equal(got, canon) {
		t.Fatalf("sent %x, not the values' own encoding %x: bits a decoder ignores left", got, canon)
	}
	want := []string{"household.members.relation"}
	recs := audit.all()
	if rel := minimise.Released(resp.ProtoReflect()); !slices.Equal(rel, want) || len(recs) != 1 || !slices.Equal(recs[0].Fields, want) {
		t.Fatalf("released %v, audited %v, want %v", rel, recs, want)
	}
}

// TestHostileWireReplyInvalidWhereDropped: a reply that proto.Unmarshal
// refuses only inside parts the minimiser drops (a relative's birth date
// cut short, a relative's name not UTF-8) is refused, not trimmed into a
// valid one.
func TestHostileWireReplyInvalidWhereDropped(t *testing.T) {
	t.Parallel()
	rel := func() []byte { return varint(nil, 2, uint64(civilv1.Relation_RELATION_SPOUSE)) }
	for name, member := range map[string][]byte{
		"birth date cut short": msg(rel(), 4, []byte{0x08, 0x80}),
		"name not UTF-8":       msg(rel(), 3, []byte("RELATIVE\xff")),
	} {
		got, _, err := askHousehold(t, msg(nil, 1, msg(nil, 2, member)))
		if err == nil || status.Code(err) != codes.Internal {
			t.Fatalf("%s: %x, %v", name, got, err)
		}
	}
}

func str(b []byte, num protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

func msg(b []byte, num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
}

func varint(b []byte, num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

// askHousehold asks GetHousehold through a gateway, with a token limited
// to household.members.relation, of a provider on the bus that answers
// reply; it returns the reply's bytes or the refusal, and the audit.
func askHousehold(t *testing.T, reply []byte) ([]byte, *recorder, error) {
	t.Helper()
	env := bustest.Start(t)
	audit := &recorder{}
	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"),
		Consent: consents{fields: []string{"household.members.relation"}}, Audit: audit, Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(ctx) })

	cr := env.Connect(t, "civil-registry")
	if _, err := cr.Subscribe("jisr.p.civil-registry.>", func(m *nats.Msg) { bus.Respond(m, reply, nil) }); err != nil {
		t.Fatal(err)
	}
	cr.Flush()
	h := &harness{env: env, audit: audit, cnss: env.Connect(t, "cnss")}
	payload, _ := proto.Marshal(&civilv1.GetHouseholdRequest{Eid: testEID})
	got, err := h.call(t, testEID, testEID, "GetHousehold", "amo-enrolment", "ok", payload)
	if err != nil {
		return nil, audit, err
	}
	return got.Data, audit, nil
}

// TestHostileWireReplyUndefinedEnum: a provider answers GetHousehold, to a
// token limited to household.members.relation, with relations its enum
// does not define, each a number of the provider's choice (32 bits per
// member: a relative's eID, a few members at a time). An undefined value
// is an unknown field: it does not leave, the member is sent without it,
// and the audit record lists only what the consumer receives.
func TestHostileWireReplyUndefinedEnum(t *testing.T) {
	t.Parallel()
	const covert = 0x4b345678 // four bytes of a relative's eID
	for name, c := range map[string]struct {
		members [][]byte
		want    []civilv1.Relation
		fields  []string
	}{
		"beside a defined one": {[][]byte{varint(nil, 2, covert), varint(nil, 2, uint64(civilv1.Relation_RELATION_SPOUSE))},
			[]civilv1.Relation{0, civilv1.Relation_RELATION_SPOUSE}, []string{"household.members.relation"}},
		"alone":         {[][]byte{varint(nil, 2, covert)}, []civilv1.Relation{0}, []string{"household.members"}},
		"negative":      {[][]byte{varint(nil, 2, 1<<64-covert)}, []civilv1.Relation{0}, []string{"household.members"}},
		"the last wins": {[][]byte{varint(varint(nil, 2, uint64(civilv1.Relation_RELATION_HEAD)), 2, covert)}, []civilv1.Relation{0}, []string{"household.members"}},
	} {
		var household []byte
		for _, m := range c.members {
			household = msg(household, 2, m)
		}
		got, audit, err := askHousehold(t, msg(nil, 1, household))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var resp civilv1.GetHouseholdResponse
		if err := proto.Unmarshal(got, &resp); err != nil {
			t.Fatal(err)
		}
		ms := resp.GetHousehold().GetMembers()
		if len(ms) != len(c.want) {
			t.Fatalf("%s: sent %v", name, &resp)
		}
		for i, m := range ms {
			if m.GetRelation() != c.want[i] {
				t.Fatalf("%s: member %d's relation %d left (%x)", name, i, m.GetRelation(), got)
			}
		}
		if canon, _ := (proto.MarshalOptions{Deterministic: true}).Marshal(&resp); !bytes.Equal(got, canon) {
			t.Fatalf("%s: sent %x, not the values' own encoding %x", name, got, canon)
		}
		recs := audit.all()
		if rel := minimise.Released(resp.ProtoReflect()); !slices.Equal(rel, c.fields) || len(recs) != 1 || !slices.Equal(recs[0].Fields, c.fields) {
			t.Fatalf("%s: released %v, audited %v, want %v", name, rel, recs, c.fields)
		}
	}
}
