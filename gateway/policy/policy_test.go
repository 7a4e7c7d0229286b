package policy_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/policy"
)

const civil = "jisr.civilregistry.v1.CivilRegistry"

func load(tb testing.TB) *policy.Policy {
	tb.Helper()
	fed, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return policy.New(fed)
}

func TestCheck(t *testing.T) {
	t.Parallel()
	p := load(t)
	for _, c := range []struct {
		name                                         string
		consumer, provider, service, method, purpose string
		token                                        bool
		rule                                         string
		code                                         codes.Code
		reason                                       string
	}{
		{"consent rule with a token", "cnss", "civil-registry", civil, "GetPerson", "amo-enrolment", true, "cnss-civil-status", codes.OK, ""},
		{"consent rule without a token", "cnss", "civil-registry", civil, "GetPerson", "amo-enrolment", false, "", codes.Unauthenticated, decision.ReasonConsentRequired},
		{"mandate without a token", "cnss", "civil-registry", civil, "IsAlive", "pension-continuity", false, "cnss-death-check", codes.OK, ""},
		{"mandate with a token still applies", "cnss", "civil-registry", civil, "IsAlive", "pension-continuity", true, "cnss-death-check", codes.OK, ""},
		{"same method, consent purpose, token", "cnss", "civil-registry", civil, "IsAlive", "amo-enrolment", true, "cnss-civil-status", codes.OK, ""},
		{"explicit request with a token", "tax", "civil-registry", civil, "GetPerson", "tax-clearance", true, "tax-civil-status", codes.OK, ""},
		{"purpose of another rule", "tax", "civil-registry", civil, "GetPerson", "amo-enrolment", true, "", codes.PermissionDenied, decision.ReasonPurposeNotAllowed},
		{"method in no rule", "cnss", "civil-registry", civil, "GetBirthAct", "amo-enrolment", true, "", codes.PermissionDenied, decision.ReasonNoRule},
		{"consumer in no rule", "health", "civil-registry", civil, "GetPerson", "amo-enrolment", true, "", codes.PermissionDenied, decision.ReasonNoRule},
		{"provider swapped", "civil-registry", "cnss", civil, "GetPerson", "amo-enrolment", true, "", codes.PermissionDenied, decision.ReasonNoRule},
		{"empty purpose", "cnss", "civil-registry", civil, "GetPerson", "", true, "", codes.PermissionDenied, decision.ReasonPurposeNotAllowed},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := p.Check(c.consumer, c.provider, c.service, c.method, c.purpose, c.token)
			st := status.Convert(err)
			if st.Code() != c.code || decision.ReasonOf(st) != c.reason {
				t.Fatalf("got %v %q (%s), want %v %q", st.Code(), decision.ReasonOf(st), st.Message(), c.code, c.reason)
			}
			if c.rule != "" && (r == nil || r.Name != c.rule) {
				t.Fatalf("rule %v, want %s", r, c.rule)
			}
			if err != nil && r != nil {
				t.Fatal("a refusal returned a rule")
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	p := load(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Check("cnss", "civil-registry", civil, "GetPerson", "amo-enrolment", true); err != nil {
			b.Fatal(err)
		}
	}
}
