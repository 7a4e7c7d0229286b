package federation

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDemoFederationLoads(t *testing.T) {
	t.Parallel()
	f, err := Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if f.TrustDomain.Name() != "jisr.internal" || len(f.Members) != 4 || len(f.Rules) == 0 {
		t.Fatalf("unexpected federation: %s, %d members, %d rules", f.TrustDomain, len(f.Members), len(f.Rules))
	}
	m, err := f.Member("cnss")
	if err != nil || m.ID.String() != "spiffe://jisr.internal/member/cnss" {
		t.Fatalf("cnss = %v, %v", m, err)
	}
	if got, err := f.MemberByID(m.ID); err != nil || got != m {
		t.Fatalf("MemberByID = %v, %v", got, err)
	}
	if p := f.Providers("jisr.civilregistry.v1.CivilRegistry"); len(p) != 1 || p[0].Name != "civil-registry" {
		t.Fatalf("providers = %v", p)
	}
	if _, err := f.Member("nobody"); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("err = %v", err)
	}
	ids := f.Identities()
	if len(ids) != 9 || ids[0].String() != "spiffe://jisr.internal/nats" {
		t.Fatalf("identities = %v", ids)
	}
}

func TestNormaliseEID(t *testing.T) {
	t.Parallel()
	f, err := Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{"ab123456": "AB123456", "  J12 ": "J12", "Z1": "Z1"} {
		if got, err := f.NormaliseEID(in); err != nil || got != want {
			t.Errorf("NormaliseEID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "AB.123", "AB*1", "AB>1", "AB 12", "ÄB123", "123456", "ABC12345", "A1234567", strings.Repeat("A1", 5000), "AB12\x00"} {
		got, err := f.NormaliseEID(bad)
		if !errors.Is(err, ErrBadEID) {
			t.Errorf("NormaliseEID(%q) = %q, %v; want ErrBadEID", bad, got, err)
		}
		if err != nil && bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("error %q repeats the eID", err)
		}
	}
}

const base = `
trust_domain: example.org
eid: {pattern: "[A-Z][0-9]{3}"}
members:
  - {name: alpha, provides: [a.v1.Alpha]}
  - {name: beta, provides: [b.v1.Beta]}
`

func TestInvalidFilesNameTheField(t *testing.T) {
	t.Parallel()
	rule := func(s string) string { return base + "rules:\n  - " + s + "\n" }
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", base + "extra: 1\n", "field extra not found"},
		{"bad trust domain", strings.Replace(base, "example.org", "Bad Domain", 1), "trust_domain"},
		{"no pattern", strings.Replace(base, `eid: {pattern: "[A-Z][0-9]{3}"}`, "", 1), "eid.pattern"},
		{"bad pattern", strings.Replace(base, `[A-Z][0-9]{3}`, `[`, 1), "eid.pattern"},
		{"no members", "eid: {pattern: x}\n", "members"},
		{"member with dot", strings.Replace(base, "name: alpha", "name: al.pha", 1), "members[0].name"},
		{"member wildcard", strings.Replace(base, "name: alpha", "name: '>'", 1), "members[0].name"},
		{"reserved member", strings.Replace(base, "name: alpha", "name: gateway", 1), "reserved"},
		{"duplicate member", strings.Replace(base, "name: beta", "name: alpha", 1), "twice"},
		{"bad service", strings.Replace(base, "a.v1.Alpha", "Alpha", 1), "members[0].provides[0]"},
		{"unknown consumer", rule("{consumer: zed, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent}"), "rules[0].consumer"},
		{"service not provided", rule("{consumer: alpha, provider: beta, service: a.v1.Alpha, methods: [M], purposes: [p], legal_basis: consent}"), "not provided by"},
		{"self", rule("{consumer: beta, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent}"), "same member"},
		{"no methods", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, purposes: [p], legal_basis: consent}"), "rules[0].methods"},
		{"method with dot", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [a.b], purposes: [p], legal_basis: consent}"), "rules[0].methods[0]"},
		{"no purposes", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], legal_basis: consent}"), "rules[0].purposes"},
		{"bad basis", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: because}"), "legal_basis"},
		{"mandate without law", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: mandate}"), "must name the law"},
		{"law on consent", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent, law: x}"), "rules[0].law"},
		{"delay on consent", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent, access_log_delay: 1h}"), "only for mandates"},
		{"bad delay", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: mandate, law: L, access_log_delay: soon}"), "access_log_delay"},
		{"bad field", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent, fields: [a..b]}"), "rules[0].fields[0]"},
		{"bad param name", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent, params: {a.b: 1}}"), "rules[0].params"},
		{"empty param", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent, params: {t: ''}}"), "rules[0].params.t"},
		{"limit without period", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent, predicate_limit: {count: 3}}"), "rules[0].predicate_limit"},
		{"limit of zero", rule("{consumer: alpha, provider: beta, service: b.v1.Beta, methods: [M], purposes: [p], legal_basis: consent, predicate_limit: {count: 0, period: 24h}}"), "rules[0].predicate_limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

func TestLimitsInheritAndValidate(t *testing.T) {
	t.Parallel()
	f, err := Parse([]byte(strings.Replace(base, "{name: beta, provides: [b.v1.Beta]}",
		"{name: beta, provides: [b.v1.Beta], limits: {in_flight: 3, max_request_bytes: 2048}}", 1) +
		"limits: {queries_per_second: 0.5, burst: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	alpha, _ := f.Member("alpha")
	beta, _ := f.Member("beta")
	wantFed := Limits{QueriesPerSecond: 0.5, Burst: 2, InFlight: DefaultLimits.InFlight, MaxRequestBytes: DefaultLimits.MaxRequestBytes, EventsPerSecond: DefaultLimits.EventsPerSecond}
	if f.Limits != wantFed || alpha.Limits != wantFed {
		t.Fatalf("federation limits %+v, alpha %+v; want %+v", f.Limits, alpha.Limits, wantFed)
	}
	if want := (Limits{QueriesPerSecond: 0.5, Burst: 2, InFlight: 3, MaxRequestBytes: 2048, EventsPerSecond: DefaultLimits.EventsPerSecond}); beta.Limits != want {
		t.Fatalf("beta limits %+v, want %+v", beta.Limits, want)
	}
	if f, err := Parse([]byte(base)); err != nil || f.Members[0].Limits != DefaultLimits {
		t.Fatalf("no limits in the file: %+v, %v", f.Members[0].Limits, err)
	}

	member := func(l string) string {
		return strings.Replace(base, "{name: beta, provides: [b.v1.Beta]}", "{name: beta, provides: [b.v1.Beta], limits: "+l+"}", 1)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"zero rate", base + "limits: {queries_per_second: 0}\n", "limits.queries_per_second"},
		{"negative rate", member("{queries_per_second: -1}"), "members[1] (beta).limits.queries_per_second"},
		{"zero burst", member("{burst: 0}"), "members[1] (beta).limits.burst"},
		{"zero in flight", base + "limits: {in_flight: 0}\n", "limits.in_flight"},
		{"request bytes over max_payload", member("{max_request_bytes: 2097152}"), "members[1] (beta).limits.max_request_bytes"},
		{"request bytes tiny", member("{max_request_bytes: 10}"), "limits.max_request_bytes"},
		{"unknown limit", member("{qps: 5}"), "field qps not found"},
		{"zero event rate", member("{events_per_second: 0}"), "members[1] (beta).limits.events_per_second"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
}

// Attack: letters outside ASCII whose upper case is ASCII (ſ → S, ı → I),
// and Unicode spaces around the eID, must not normalise to a citizen's eID:
// one spelling per citizen, so that no party reads a different eID into the
// same bytes.
func TestNormaliseEIDRefusesUnicodeAliases(t *testing.T) {
	f, err := Load("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"nſ389813", "Nſ389813", "ıD12345", "\u00a0NS389813", "NS389813\u3000", "\u2028NS1", "\ufeffNS1"} {
		if got, err := f.NormaliseEID(bad); !errors.Is(err, ErrBadEID) {
			t.Errorf("NormaliseEID(%q) = %q, %v; want ErrBadEID", bad, got, err)
		}
	}
}

func TestProvides(t *testing.T) {
	f, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Provides("alpha", "a.v1.Alpha") || !f.Provides("beta", "b.v1.Beta") {
		t.Fatal("a member does not provide its own service")
	}
	for _, c := range [][2]string{{"beta", "a.v1.Alpha"}, {"alpha", "b.v1.Beta"}, {"zed", "a.v1.Alpha"}, {"alpha", "no.v1.Such"}} {
		if f.Provides(c[0], c[1]) {
			t.Errorf("Provides(%q, %q) = true", c[0], c[1])
		}
	}
}

func TestAnomaliesSection(t *testing.T) {
	b, err := os.ReadFile("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Anomalies{Window: 10 * time.Minute, ProbingRefusals: 20, DistinctCitizens: 50, DistinctFactor: 5, Baseline: 168 * time.Hour,
		RepeatedQueries: 5, HoursFrom: 7, HoursTo: 20, LogStall: 10 * time.Minute}
	if f.Anomalies != want {
		t.Fatalf("anomalies %+v, want %+v", f.Anomalies, want)
	}
	head, _, _ := strings.Cut(string(b), "\nanomalies:")
	if g, err := Parse([]byte(head + "\nanomalies:\n  window: 5m\n")); err != nil || g.Anomalies.Window != 5*time.Minute || g.Anomalies.ProbingRefusals != 0 {
		t.Fatalf("a partial anomalies section: %v %+v", err, g)
	}
	for _, bad := range []string{"window: soon", "usual_hours: [20, 7]", "usual_hours: [7]", "probing_refusals: -1", "log_stall: -1m"} {
		if _, err := Parse([]byte(head + "\nanomalies:\n  " + bad + "\n")); err == nil {
			t.Errorf("anomalies %q accepted", bad)
		}
	}
}
