package gateway_test

import (
	"bytes"
	"context"
	"maps"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/minimise"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// The gateway knows a ministry's schema only from the descriptor set the
// federation names, the reference ministries' included: a new civil
// registry schema (a field added to Person, its set's digest in the file,
// a rule naming the field) applies without a rebuild, although this test
// binary links the old one. The new field is released where the rule and
// the token grant it, and minimised away (with the other fields neither
// grants) where they do not.
func TestAReferenceMinistrysNewSchemaAppliesWithoutARebuild(t *testing.T) {
	t.Parallel()
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(bustest.Descriptors()["civil-registry.binpb"], &fds); err != nil {
		t.Fatal(err)
	}
	added := false
	for _, fd := range fds.File {
		if fd.GetName() != "jisr/civilregistry/v1/civilregistry.proto" {
			continue
		}
		for _, mt := range fd.MessageType {
			if mt.GetName() == "Person" {
				mt.Field = append(mt.Field, &descriptorpb.FieldDescriptorProto{Name: proto.String("nickname"), Number: proto.Int32(50),
					Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), JsonName: proto.String("nickname")})
				added = true
			}
		}
	}
	if !added {
		t.Fatal("no Person message in the civil registry's set")
	}
	set, err := proto.Marshal(&fds)
	if err != nil {
		t.Fatal(err)
	}
	old := descset.Digest(bustest.Descriptors()["civil-registry.binpb"])
	yaml := bytes.Replace(bustest.FederationYAML(), []byte(old), []byte(descset.Digest(set)), 1)
	yaml = bytes.Replace(yaml, []byte("      - person.names\n      - person.sex\n"), []byte("      - person.names\n      - person.nickname\n      - person.sex\n"), 1)
	if bytes.Count(yaml, []byte("person.nickname")) != 1 || bytes.Contains(yaml, []byte(old)) {
		t.Fatal("could not change the test federation's civil registry")
	}
	env := bustest.Start(t, bustest.WithFederation(yaml))
	sets := maps.Clone(env.Fed.Descriptors)
	sets["civil-registry.binpb"] = set

	cr := env.Connect(t, "civil-registry")
	if _, err := cr.Subscribe("jisr.p.civil-registry.>", func(m *nats.Msg) {
		// The backend, on the new schema: field 50 is the nickname.
		p := &civilv1.Person{Eid: testEID, Names: &civilv1.Names{Latin: &jisrv1.Name{Given: "Meryem", Family: "Alaoui"}}, FatherName: "Driss"}
		b := protowire.AppendString(protowire.AppendTag(nil, 50, protowire.BytesType), "Mimi")
		p.ProtoReflect().SetUnknown(b)
		out, _ := proto.Marshal(&civilv1.GetPersonResponse{Person: p})
		bus.Respond(m, out, nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := cr.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		granted []string
		want    string // the released fields
	}{
		{[]string{"person.names", "person.nickname"}, "person.names.latin.family,person.names.latin.given,person.nickname"},
		{[]string{"person.names"}, "person.names.latin.family,person.names.latin.given"},
	} {
		audit := &recorder{}
		gw, err := gateway.New(gateway.Config{
			Federation: env.Fed, DescriptorSets: sets, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"),
			Consent: consents{fields: tc.granted}, Audit: audit,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := gw.Start(ctx); err != nil {
			t.Fatal(err)
		}
		h := &harness{env: env, audit: audit, cnss: env.Connect(t, "cnss")}
		reply, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
		gw.Stop(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var resp civilv1.GetPersonResponse // the old schema: the nickname is field 50
		if err := proto.Unmarshal(reply.Data, &resp); err != nil {
			t.Fatal(err)
		}
		released := strings.Join(minimise.Released(resp.ProtoReflect()), ",")
		hasNickname := strings.Contains(string(resp.GetPerson().ProtoReflect().GetUnknown()), "Mimi")
		if tc.want != strings.Join(audit.all()[0].Fields, ",") || hasNickname != strings.Contains(tc.want, "nickname") || strings.Contains(string(reply.Data), "Driss") {
			t.Errorf("granted %v: audited %v, released %s, nickname sent %v", tc.granted, audit.all()[0].Fields, released, hasNickname)
		}
	}
}
