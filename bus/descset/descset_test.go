package descset_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	civilregistryv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// justice is the onboarding tour's member: its descriptor set as
// `buf build -o` wrote it (deploy/members/justice).
func justice(t *testing.T) ([]byte, []byte) {
	t.Helper()
	set, err := os.ReadFile("../../deploy/members/justice/justice.binpb")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return set, withJustice(t, base, descset.Digest(set), "methods: [HasConviction]")
}

func withJustice(t *testing.T, base []byte, digest, methods string) []byte {
	t.Helper()
	y := bytes.Replace(base, []byte("\ndescriptor_sets:\n"), []byte(`
descriptor_sets:
  - file: justice.binpb
    sha256: `+digest+`
`), 1)
	y = bytes.Replace(y, []byte("\nmembers:\n"), []byte(`
members:
  - name: justice
    title: Ministry of justice
    provides: [jisr.justice.v1.CriminalRecord]
`), 1)
	y = bytes.Replace(y, []byte("\nrules:\n"), []byte(`
rules:
  - name: cnss-criminal-record
    consumer: cnss
    provider: justice
    service: jisr.justice.v1.CriminalRecord
    `+methods+`
    purposes: [pension-continuity]
    legal_basis: mandate
    law: "test"
`), 1)
	if bytes.Equal(y, base) {
		t.Fatal("no members: or rules: section")
	}
	return y
}

// sets are the reference ministries' descriptor sets (beside the test
// federation file) and, when given, justice's.
func sets(t *testing.T, justice []byte) map[string][]byte {
	t.Helper()
	fed, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := maps.Clone(fed.Descriptors)
	if len(out) != 4 {
		t.Fatalf("the test federation names %d descriptor sets", len(out))
	}
	if justice != nil {
		out["justice.binpb"] = justice
	}
	return out
}

// A member's services come from its descriptor set, checked against the
// digest the federation file names; the catalogue places its methods (eID
// field, predicate) with dynamic message types; nothing of justice is
// linked into jisr.
func TestJusticeFromItsDescriptorSet(t *testing.T) {
	set, yaml := justice(t)
	fed, err := federation.Parse(yaml)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := descset.Services(fed, sets(t, nil), nil); err == nil {
		t.Fatal("justice's set left out: accepted")
	}
	base, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := descset.Services(base, base.Descriptors, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.New(fed, ref); err == nil || !strings.Contains(err.Error(), "jisr.justice.v1.CriminalRecord") {
		t.Fatalf("justice placed without its descriptor set: %v", err)
	}
	svcs, err := descset.Services(fed, sets(t, set), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(fed, svcs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cat.ByFullMethod("/jisr.justice.v1.CriminalRecord/HasConviction")
	if err != nil {
		t.Fatal(err)
	}
	if !m.Predicate || m.EID.Name() != "eid" {
		t.Fatalf("HasConviction: predicate %v, eID field %s", m.Predicate, m.EID.Name())
	}
	req := m.Input.New()
	req.Set(m.EID, protoreflectString("AB123456"))
	raw, err := proto.Marshal(req.Interface())
	if err != nil {
		t.Fatal(err)
	}
	if _, eid, err := m.Decode(raw); err != nil || eid != "AB123456" {
		t.Fatalf("decode: %q %v", eid, err)
	}
	if got := catalog.Callable(fed, "cnss"); !strings.Contains(strings.Join(got, ","), "jisr.justice.v1.CriminalRecord") {
		t.Fatalf("cnss may call %v", got)
	}

	// A set that is not the one named: refused.
	if _, err := descset.Services(fed, sets(t, append(set, 0)), nil); !errors.Is(err, descset.ErrDigest) {
		t.Fatalf("a changed set: %v", err)
	}
	if _, err := descset.Services(fed, sets(t, nil), nil); err == nil {
		t.Fatal("a named set missing: accepted")
	}
	// A rule naming a method the set does not have: refused at load.
	bad, err := federation.Parse(withJustice(t, mustRead(t, "../testdata/federation.yaml"), descset.Digest(set), "methods: [HasConvictions]"))
	if err != nil {
		t.Fatal(err)
	}
	if svcs, err := descset.Services(bad, sets(t, set), nil); err != nil {
		t.Fatal(err)
	} else if _, err := catalog.New(bad, svcs); err == nil || !strings.Contains(err.Error(), "HasConvictions") {
		t.Fatalf("a rule with an unknown method: %v", err)
	}
}

// A set whose request has no eID field option, or that redefines a service
// another set defines, is refused.
func TestDescriptorSetValidation(t *testing.T) {
	set, yaml := justice(t)
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(set, &fds); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(*descriptorpb.FileDescriptorProto)) []byte {
		c := proto.Clone(&fds).(*descriptorpb.FileDescriptorSet)
		for _, fd := range c.File {
			if fd.GetPackage() == "jisr.justice.v1" {
				f(fd)
			}
		}
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	noEID := edit(func(fd *descriptorpb.FileDescriptorProto) {
		for _, m := range fd.MessageType {
			for _, f := range m.Field {
				f.Options = nil
			}
		}
	})
	fed, err := federation.Parse(bytes.Replace(yaml, []byte(descset.Digest(set)), []byte(descset.Digest(noEID)), 1))
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := descset.Services(fed, sets(t, noEID), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.New(fed, svcs); err == nil || !strings.Contains(err.Error(), "HasConviction") {
		t.Fatalf("a request without the eID option: %v", err)
	}
	// Redefining the civil registry's service (a different file declaring it).
	hijack := edit(func(fd *descriptorpb.FileDescriptorProto) {
		fd.Package = proto.String("jisr.civilregistry.v1")
		fd.Service[0].Name = proto.String("CivilRegistry")
		for _, m := range fd.Service[0].Method {
			m.InputType = proto.String(".jisr.civilregistry.v1.HasConvictionRequest")
			m.OutputType = proto.String(".jisr.civilregistry.v1.HasConvictionResponse")
		}
	})
	hfed, err := federation.Parse(bytes.Replace(yaml, []byte(descset.Digest(set)), []byte(descset.Digest(hijack)), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := descset.Services(hfed, sets(t, hijack), nil); err == nil || !strings.Contains(err.Error(), "defined by both") {
		t.Fatalf("a set redefining another set's service: %v", err)
	}
}

// The signed bundle carries the descriptor sets: a bundle whose set does
// not match the digest, or that leaves it out, is refused.
func TestBundleCarriesDescriptorSets(t *testing.T) {
	set, yaml := justice(t)
	pub, key, _ := ed25519.GenerateKey(nil)
	if _, err := federation.Sign(&federation.Bundle{Version: 1, Federation: yaml}, key); err == nil {
		t.Fatal("signed a bundle without the descriptor set its federation names")
	}
	raw, err := federation.Sign(&federation.Bundle{Version: 1, Federation: yaml, Descriptors: sets(t, set)}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, fed, err := federation.Verify(raw, []ed25519.PublicKey{pub}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := descset.Services(fed, b.Descriptors, nil); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func protoreflectString(s string) protoreflect.Value { return protoreflect.ValueOfString(s) }

// The digest deploy/members/justice/federation-justice.yaml (the tour's
// snippet) names is the one of the descriptor set beside it.
func TestTourSnippetNamesTheSetsDigest(t *testing.T) {
	set := mustRead(t, "../../deploy/members/justice/justice.binpb")
	if snippet := mustRead(t, "../../deploy/members/justice/federation-justice.yaml"); !bytes.Contains(snippet, []byte("sha256: "+descset.Digest(set))) {
		t.Fatalf("federation-justice.yaml does not name sha256 %s (rebuilt justice.binpb? update it)", descset.Digest(set))
	}
}

// The reference ministries come from their descriptor sets too. Where the
// binary links a set's file (here the test links the civil registry's
// generated code) and it is the same file, the linked descriptor serves it;
// a set that differs (a field added) is served from the set, with dynamic
// messages, without a rebuild.
func TestReferenceSetsLinkedWhenSameDynamicOtherwise(t *testing.T) {
	base, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	svcs, err := descset.Services(base, base.Descriptors, nil)
	if err != nil {
		t.Fatal(err)
	}
	linked := civilregistryv1.File_jisr_civilregistry_v1_civilregistry_proto.Services().Get(0)
	var got protoreflect.ServiceDescriptor
	for _, sd := range svcs {
		if sd.FullName() == linked.FullName() {
			got = sd
		}
	}
	if got != linked {
		t.Fatalf("the civil registry's set did not resolve to the linked, identical file: %v", got)
	}
	cat, err := catalog.New(base, svcs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := cat.ByFullMethod("/jisr.civilregistry.v1.CivilRegistry/GetPerson")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Output.New().Interface().(*civilregistryv1.GetPersonResponse); !ok {
		t.Fatalf("GetPerson's reply is %T, not the linked type", m.Output.New().Interface())
	}

	// A new version of the civil registry's schema: a field added to a reply.
	var fds descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(base.Descriptors["civil-registry.binpb"], &fds); err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds.File {
		if fd.GetName() == "jisr/civilregistry/v1/civilregistry.proto" {
			for _, mt := range fd.MessageType {
				if mt.GetName() == "GetPersonResponse" {
					mt.Field = append(mt.Field, &descriptorpb.FieldDescriptorProto{Name: proto.String("note"), Number: proto.Int32(99),
						Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), JsonName: proto.String("note")})
				}
			}
		}
	}
	v2, err := proto.Marshal(&fds)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fed2, err := federation.Parse(bytes.Replace(raw, []byte(base.DescriptorSets[0].SHA256), []byte(descset.Digest(v2)), 1))
	if err != nil {
		t.Fatal(err)
	}
	sets2 := maps.Clone(base.Descriptors)
	sets2["civil-registry.binpb"] = v2
	svcs2, err := descset.Services(fed2, sets2, nil)
	if err != nil {
		t.Fatal(err)
	}
	cat2, err := catalog.New(fed2, svcs2)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := cat2.ByFullMethod("/jisr.civilregistry.v1.CivilRegistry/GetPerson")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m2.Output.New().Interface().(*civilregistryv1.GetPersonResponse); ok || m2.Output.Descriptor().Fields().ByName("note") == nil {
		t.Fatalf("the changed set's reply is %T, without its new field", m2.Output.New().Interface())
	}
	if m2.EID == nil {
		t.Fatal("the eID option was not read from the changed set's descriptor")
	}
}
