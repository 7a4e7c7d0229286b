package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/services/demodata"
	"github.com/jisr-bus/jisr/services/store"
)

// eidSpellings are raw eIDs as a consumer may type them. The federation's
// normalisation (docs/integrate.md, "The eID") trims ASCII spaces and
// upper-cases ASCII letters, and refuses any other byte: Unicode
// upper-casing would make "nſ389813" a second spelling of NS389813.
var eidSpellings = []struct {
	raw, want string // want "" = refused
}{
	{" nh302704 ", "NH302704"},
	{"bk482913", "BK482913"},
	{"nſ389813", ""},
	{"Nſ389813", ""},
	{"ıD12345", ""},
	{"ＮＳ389813", ""}, // full-width letters
	{"NS389813\u3000", ""},
	{"\u00a0NS389813", ""},
	{"\ufeffNS389813", ""},
	{"NS3898\u0661\u0662", ""}, // Arabic-Indic digits
	{"NS.38981", ""},
}

// TestEIDIsNormalisedTheSameEverywhere: the federation's rule (used by the
// adapter, the gateway, the citizen's sign-in and the consent CLI) and the
// reference backends' (services/store) accept the same spellings and map
// them to the same eID; the consent CLI refuses what the rule refuses. The
// adapter's and the gateway's refusals are tested in their packages
// (services/adapter TestAdapterRefusalsCarryErrorInfo, gateway
// TestUnicodeSpellingsOfAnEIDAreRefused); that the provider receives the
// normalised eID, in gateway TestTheProviderGetsTheEIDTheGatewayChecked and
// TestDevWithYourOwnBackend.
func TestEIDIsNormalisedTheSameEverywhere(t *testing.T) {
	fed, err := federation.Load("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range eidSpellings {
		got, err := fed.NormaliseEID(c.raw)
		if err != nil {
			got = ""
		}
		if got != c.want {
			t.Errorf("federation: %q → %q, want %q", c.raw, got, c.want)
		}
		be, err := store.CheckEID(c.raw)
		if err != nil {
			be = ""
		}
		if be != c.want && !(c.want == "" && be == "NS.38981") { // the store has no pattern: a format refusal is the federation's alone
			t.Errorf("reference backend: %q → %q, want %q", c.raw, be, c.want)
		}
		if d := demodata.NormaliseEID(c.raw); c.want != "" && d != c.want {
			t.Errorf("demodata: %q → %q, want %q", c.raw, d, c.want)
		}
		if c.want != "" {
			continue
		}
		root := newRootCmd()
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs([]string{"--federation", "../../deploy/federation.yaml", "--certs", t.TempDir(),
			"consent", "grant", "--offline", "--citizen", c.raw, "--to", "cnss",
			"--service", "jisr.civilregistry.v1.CivilRegistry", "--methods", "GetPerson", "--purpose", "amo-enrolment"})
		err = root.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "--citizen") || out.Len() > 0 {
			t.Errorf("consent grant --citizen %q: err %v, stdout %q: want a refusal of --citizen and no token", c.raw, err, out.String())
		}
	}
}

// TestConsentGrantChecksTheRules: a grant no rule allows is refused with
// what the rules do allow, --basis defaults to the matching rule's, and a
// basis other than the rule's is refused naming the rule and its basis.
func TestConsentGrantChecksTheRules(t *testing.T) {
	fed, err := federation.Load("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	grant := func(to, svc, methods, purpose string) *consent.GrantRequest {
		return &consent.GrantRequest{To: to, Service: svc, Methods: strings.Split(methods, ","), Purpose: purpose}
	}
	const cnssSvc, civil = "jisr.cnss.v1.SocialSecurity", "jisr.civilregistry.v1.CivilRegistry"

	req := grant("health", cnssSvc, "GetAmoCoverage", "care-eligibility")
	if r, err := checkGrant(fed, req, false); err != nil || req.LegalBasis != federation.BasisExplicitRequest || r.Name != "health-amo-coverage" {
		t.Fatalf("default basis: rule %v, basis %q, err %v; want health-amo-coverage's explicit_request", r, req.LegalBasis, err)
	}
	req = grant("health", cnssSvc, "GetAmoCoverage", "care-eligibility")
	req.LegalBasis = federation.BasisConsent
	if _, err := checkGrant(fed, req, true); err == nil || !strings.Contains(err.Error(), "rule health-amo-coverage requires legal basis explicit_request") {
		t.Fatalf("wrong basis: %v", err)
	}
	for _, c := range []struct {
		req  *consent.GrantRequest
		says string
	}{
		{grant("cnss", civil, "GetPerson", "marketing"), `purpose "marketing" is not allowed`},
		{grant("cnss", civil, "DropTables", "amo-enrolment"), "no access rule lets cnss call all of DropTables"},
		{grant("cnss", "jisr.nowhere.v1.Nothing", "Get", "amo-enrolment"), "no access rule lets cnss call jisr.nowhere.v1.Nothing"},
	} {
		if _, err := checkGrant(fed, c.req, false); err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("%+v: got %v, want %q", c.req, err, c.says)
		}
	}
}
