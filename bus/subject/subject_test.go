package subject

import (
	"errors"
	"strings"
	"testing"
)

func TestQueryRoundTrip(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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

func TestAuditSubjects(t *testing.T) {
	t.Parallel()
	s, err := Audit("gw-1", "CKEY")
	if err != nil || s != "jisr.audit.gw-1.CKEY" {
		t.Fatalf("Audit: %q, %v", s, err)
	}
	if s, _ := Audit("gw-1", ""); s != "jisr.audit.gw-1._" {
		t.Fatalf("record about no citizen: %q", s)
	}
	if log, ck, err := ParseAudit("jisr.audit.gw-1._"); err != nil || log != "gw-1" || ck != "" {
		t.Fatalf("ParseAudit: %q %q %v", log, ck, err)
	}
	for _, bad := range [][2]string{{"gw.1", "CK"}, {"gw-1", "C K"}, {"", "CK"}, {"gw-1", "*"}, {"gw-1", ">"}} {
		if _, err := Audit(bad[0], bad[1]); err == nil {
			t.Errorf("Audit(%q, %q) accepted", bad[0], bad[1])
		}
	}
	for _, bad := range []string{"jisr.audit.CK", "jisr.audit.gw-1.CK.x", "jisr.q.gw-1.CK", "jisr.audit.*.CK"} {
		if _, _, err := ParseAudit(bad); err == nil {
			t.Errorf("ParseAudit(%q) accepted", bad)
		}
	}
	if f, _ := AuditCitizen("CK"); f != "jisr.audit.*.CK" {
		t.Fatalf("AuditCitizen %q", f)
	}
	if _, err := AuditCitizen(NoCKey); err == nil {
		t.Fatal("a filter for the records about no citizen")
	}
	if f, _ := AuditLog("gw-1"); f != "jisr.audit.gw-1.>" {
		t.Fatalf("AuditLog %q", f)
	}
	if c, _ := Checkpoint("gw-1"); c != "jisr.checkpoint.gw-1" {
		t.Fatalf("Checkpoint %q", c)
	}
	if l, err := ParseCheckpoint("jisr.checkpoint.gw-1"); err != nil || l != "gw-1" {
		t.Fatalf("ParseCheckpoint %q %v", l, err)
	}
	if _, err := ParseCheckpoint("jisr.checkpoint.gw-1.x"); err == nil {
		t.Fatal("ParseCheckpoint accepted a subject with too many tokens")
	}
}

func TestCheckReplyAcceptsOnlyTheIdentitysOwnInbox(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		reply, identity string
		ok              bool
	}{
		{"_INBOX.cnss.abc", "cnss", true},
		{"_INBOX.cnss.abc.def", "cnss", true},
		{"_INBOX.cnss", "cnss", false},
		{"_INBOX.cnss.", "cnss", false},
		{"_INBOX.cnss..x", "cnss", false},
		{"_INBOX.cnss.*", "cnss", false},
		{"_INBOX.cnss.>", "cnss", false},
		{"_INBOX.cnss.a b", "cnss", false},
		{"_INBOX.cnssx.a", "cnss", false},
		{"_INBOX.tax.a", "cnss", false},
		{"_INBOX.gateway.a", "cnss", false},
		{"$JS.API.STREAM.DELETE.JISR_AUDIT", "cnss", false},
		{"$KV.jisr_usage.x", "cnss", false},
		{"jisr.audit.gw-1.x", "cnss", false},
		{"jisr.q.tax.civil-registry.s.m.k", "cnss", false},
		{"", "cnss", false},
		{"_INBOX.cnss.a", "", false},
		{"_INBOX.*.a", "*", false},
		{"_INBOX.cnss." + strings.Repeat("a", 600), "cnss", false},
	} {
		if err := CheckReply(c.reply, c.identity); (err == nil) != c.ok {
			t.Errorf("CheckReply(%q, %q) = %v, want ok %v", c.reply, c.identity, err, c.ok)
		}
	}
}

func TestQueryConsumer(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]string{
		"jisr.q.cnss.civil-registry.s.m.k": "cnss",
		"jisr.q.cnss":                      "cnss",
		"jisr.q.cnss.>":                    "cnss",
		"jisr.q.*.x":                       "",
		"jisr.q.":                          "",
		"jisr.p.cnss.x":                    "",
	} {
		got, err := QueryConsumer(s)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("QueryConsumer(%q) = %q, %v; want %q", s, got, err, want)
		}
	}
}

func TestCKey(t *testing.T) {
	for s, want := range map[string]string{
		"jisr.q.cnss.civilregistry.svc.Get.ABC": "ABC",
		"jisr.p.civilregistry.svc.Get.ABC":      "ABC",
		"jisr.audit.gw.ABC":                     "",
		"_INBOX.cnss.x":                         "",
		"jisr.qx.a.b":                           "",
	} {
		if got := CKey(s); got != want {
			t.Errorf("CKey(%q) = %q, want %q", s, got, want)
		}
	}
}
