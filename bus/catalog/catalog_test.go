package catalog

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

func demo(t *testing.T) *federation.Federation {
	t.Helper()
	f, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// refServices are the reference ministries' services, from their
// descriptor sets beside the test federation file.
func refServices(t *testing.T) []protoreflect.ServiceDescriptor {
	t.Helper()
	svcs, err := descset.Services(demo(t), demo(t).Descriptors, nil)
	if err != nil {
		t.Fatal(err)
	}
	return svcs
}

func TestCatalogOfTheDemoFederation(t *testing.T) {
	t.Parallel()
	c, err := New(demo(t), refServices(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services()) != 4 || len(c.Methods()) < 14 {
		t.Fatalf("%d services, %d methods", len(c.Services()), len(c.Methods()))
	}
	m, err := c.Lookup("jisr_civilregistry_v1_CivilRegistry", "GetPerson")
	if err != nil || m.FullMethod != "/jisr.civilregistry.v1.CivilRegistry/GetPerson" || m.Predicate {
		t.Fatalf("%+v %v", m, err)
	}
	if p, _ := c.ByFullMethod("/jisr.civilregistry.v1.CivilRegistry/IsAlive"); p == nil || !p.Predicate {
		t.Fatal("IsAlive is a predicate")
	}
	if _, err := c.Lookup("jisr_civilregistry_v1_CivilRegistry", "Nope"); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("err = %v", err)
	}
	b, _ := proto.Marshal(&civilv1.GetPersonRequest{Eid: "AB123"})
	if _, eid, err := m.Decode(b); err != nil || eid != "AB123" {
		t.Fatalf("Decode = %q, %v", eid, err)
	}
	if _, _, err := m.Decode([]byte{0xff}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := m.Decode(nil); !errors.Is(err, ErrNoEID) {
		t.Fatalf("err = %v", err)
	}
}

func TestRulesAreCheckedAgainstTheProtocol(t *testing.T) {
	t.Parallel()
	base := `
eid: {pattern: "[A-Z]{1,2}[0-9]{1,6}"}
members:
  - {name: civil-registry, provides: [jisr.civilregistry.v1.CivilRegistry]}
  - {name: cnss}
rules:
  - {consumer: cnss, provider: civil-registry, service: jisr.civilregistry.v1.CivilRegistry, purposes: [p], legal_basis: consent, `
	for _, tc := range []struct{ rule, want string }{
		{`methods: [GetPerson], fields: [person.names.latin]}`, ""},
		{`methods: [GetPerson, IsAlive], fields: [alive, person.sex]}`, ""},
		{`methods: [GetPersonne]}`, "has no method GetPersonne"},
		{`methods: [GetPerson], fields: [person.nickname]}`, `field "person.nickname"`},
		{`methods: [GetPerson], fields: [person.sex.value]}`, `field "person.sex.value"`},
	} {
		fed, err := federation.Parse([]byte(base + tc.rule + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(fed, refServices(t))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", tc.rule, err, tc.want)
		}
	}
	fed, _ := federation.Parse([]byte(strings.Replace(base, "jisr.civilregistry.v1.CivilRegistry]", "jisr.nothing.v1.Nothing]", 1) + "methods: [X]}\n"))
	if fed != nil {
		if _, err := New(fed, refServices(t)); err == nil || !strings.Contains(err.Error(), "has no descriptor") {
			t.Errorf("unlinked service: %v", err)
		}
	}
}

func TestPredicateParametersAreFixedByTheRule(t *testing.T) {
	t.Parallel()
	base := `
eid: {pattern: "[A-Z]{1,2}[0-9]{1,6}"}
members:
  - {name: tax, provides: [jisr.tax.v1.Tax]}
  - {name: cnss}
rules:
  - {consumer: cnss, provider: tax, service: jisr.tax.v1.Tax, purposes: [p], legal_basis: consent, `
	for _, tc := range []struct{ rule, want string }{
		{`methods: [IsIncomeBelow], params: {threshold_minor_units: 6000000}}`, ""},
		{`methods: [IsIncomeBelow, GetTaxClearance], params: {threshold_minor_units: 1}}`, ""},
		{`methods: [IsIncomeBelow]}`, "needs params.threshold_minor_units"},
		{`methods: [IsIncomeBelow], params: {threshold_minor_units: lots}}`, `"lots" is not a int64`},
		{`methods: [IsIncomeBelow], params: {threshold_minor_units: 1, year: 2024}}`, "params.year is no parameter"},
		{`methods: [GetTaxClearance], params: {eid: AB1}}`, "params.eid is no parameter"},
	} {
		fed, err := federation.Parse([]byte(base + tc.rule + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(fed, refServices(t))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", tc.rule, err, tc.want)
			continue
		}
		if err != nil {
			continue
		}
		m, _ := c.Lookup("jisr_tax_v1_Tax", "IsIncomeBelow")
		p := c.Params(fed.Rules[0], m)
		if len(p) != 1 || p[0].Field.Name() != "threshold_minor_units" || p[0].Value.Int() != mustInt(t, fed.Rules[0].Params["threshold_minor_units"]) {
			t.Errorf("%s: params = %v", tc.rule, p)
		}
		if g, _ := c.Lookup("jisr_tax_v1_Tax", "GetTaxClearance"); c.Params(fed.Rules[0], g) != nil {
			t.Errorf("%s: GetTaxClearance has no parameter", tc.rule)
		}
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
