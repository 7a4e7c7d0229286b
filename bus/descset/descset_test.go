package descset_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/jisr-bus/jisr/bus/catalog"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/proto/services"
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
	y := bytes.Replace(base, []byte("\nmembers:\n"), []byte(`
descriptor_sets:
  - file: justice.binpb
    sha256: `+digest+`
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
	if _, err := catalog.New(fed, services.All()); err == nil || !strings.Contains(err.Error(), "jisr.justice.v1.CriminalRecord") {
		t.Fatalf("justice placed without its descriptor set: %v", err)
	}
	svcs, err := descset.Services(fed, map[string][]byte{"justice.binpb": set}, services.All())
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
	if _, err := descset.Services(fed, map[string][]byte{"justice.binpb": append(set, 0)}, services.All()); !errors.Is(err, descset.ErrDigest) {
		t.Fatalf("a changed set: %v", err)
	}
	if _, err := descset.Services(fed, nil, services.All()); err == nil {
		t.Fatal("a named set missing: accepted")
	}
	// A rule naming a method the set does not have: refused at load.
	bad, err := federation.Parse(withJustice(t, mustRead(t, "../testdata/federation.yaml"), descset.Digest(set), "methods: [HasConvictions]"))
	if err != nil {
		t.Fatal(err)
	}
	if svcs, err := descset.Services(bad, map[string][]byte{"justice.binpb": set}, services.All()); err != nil {
		t.Fatal(err)
	} else if _, err := catalog.New(bad, svcs); err == nil || !strings.Contains(err.Error(), "HasConvictions") {
		t.Fatalf("a rule with an unknown method: %v", err)
	}
}

// A set whose request has no eID field option, or that redefines a service
// linked into jisr, is refused.
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
	svcs, err := descset.Services(fed, map[string][]byte{"justice.binpb": noEID}, services.All())
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
	if _, err := descset.Parse(hijack); err == nil || !strings.Contains(err.Error(), "linked into jisr") {
		t.Fatalf("a set redefining a linked service: %v", err)
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
	raw, err := federation.Sign(&federation.Bundle{Version: 1, Federation: yaml, Descriptors: map[string][]byte{"justice.binpb": set}}, key)
	if err != nil {
		t.Fatal(err)
	}
	b, fed, err := federation.Verify(raw, []ed25519.PublicKey{pub}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := descset.Services(fed, b.Descriptors, services.All()); err != nil {
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
