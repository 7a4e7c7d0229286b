package subject

import (
	"errors"
	"strings"
	"testing"
)

func TestQueryRoundTrip(t *testing.T) {
	q := Query{Consumer: "cnss", Provider: "civil-registry", Service: ServiceToken("jisr.civilregistry.v1.CivilRegistry"), Method: "GetPerson", CKey: "ABCDEF234567"}
	s, err := q.Subject()
	if err != nil {
		t.Fatal(err)
	}
	if want := "jisr.q.cnss.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.ABCDEF234567"; s != want {
		t.Fatalf("subject %q, want %q", s, want)
	}
	got, err := ParseQuery(s)
	if err != nil || got != q {
		t.Fatalf("ParseQuery = %+v, %v; want %+v", got, err, q)
	}
	p, err := q.ProviderSubject()
	if err != nil || p != "jisr.p.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.ABCDEF234567" {
		t.Fatalf("ProviderSubject = %q, %v", p, err)
	}
	pq, err := ParseProvider(p)
	if err != nil || pq.Provider != q.Provider || pq.CKey != q.CKey || pq.Consumer != "" {
		t.Fatalf("ParseProvider = %+v, %v", pq, err)
	}
}

func TestBadTokensNeverReachASubject(t *testing.T) {
	for _, bad := range []string{"", "a.b", "a*", ">", "a b", "a\tb", "é", "a\x00", "a\nb", strings.Repeat("x", 10<<10)} {
		q := Query{Consumer: "cnss", Provider: "tax", Service: "s", Method: "m", CKey: bad}
		if _, err := q.Subject(); !errors.Is(err, ErrBadToken) {
			t.Errorf("ckey %q: err = %v, want ErrBadToken", bad, err)
		}
		q = Query{Consumer: bad, Provider: "tax", Service: "s", Method: "m", CKey: "K"}
		if _, err := q.Subject(); !errors.Is(err, ErrBadToken) {
			t.Errorf("consumer %q: err = %v, want ErrBadToken", bad, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{
		"jisr.q.cnss.tax.svc.M",             // too few tokens
		"jisr.q.cnss.tax.svc.M.K.extra",     // too many
		"jisr.p.tax.svc.M.K",                // wrong prefix
		"jisr.q.cnss.tax.svc.M.*",           // wildcard
		"jisr.q.cnss.tax.svc.M.>",           // wildcard
		"jisr.q.cnss..svc.M.K",              // empty token
		"jisr.qq.cnss.tax.svc.M.K",          // prefix lookalike
		"jisr.q.cnss.tax.svc.M.K\u00e9",     // non-ASCII
		"xjisr.q.cnss.tax.svc.M.K",          // prefix lookalike
		"jisr.q.cnss.tax.svc.M.K " + "tail", // whitespace
	} {
		if _, err := ParseQuery(s); !errors.Is(err, ErrBadSubject) {
			t.Errorf("ParseQuery(%q) err = %v, want ErrBadSubject", s, err)
		}
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add("jisr.q.cnss.tax.svc.M.K")
	f.Add("jisr.q.a.b.c.d.e.f")
	f.Fuzz(func(t *testing.T, s string) {
		q, err := ParseQuery(s)
		if err != nil {
			return
		}
		back, err := q.Subject()
		if err != nil || back != s {
			t.Fatalf("ParseQuery accepted %q but it renders as %q (%v)", s, back, err)
		}
	})
}

func BenchmarkQuerySubject(b *testing.B) {
	q := Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry", Method: "GetPerson", CKey: strings.Repeat("A", 52)}
	for b.Loop() {
		if _, err := q.Subject(); err != nil {
			b.Fatal(err)
		}
	}
}
