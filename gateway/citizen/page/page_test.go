package page

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jisr-bus/jisr/bus/federation"
)

type noSession struct{}

func (noSession) AuthenticateRequest(*http.Request) (string, error) {
	return "", errors.New("no session")
}

func fed(t *testing.T) *federation.Federation {
	t.Helper()
	f, err := federation.Load("../../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLanguageFromTheBrowserAndTheSwitch(t *testing.T) {
	for h, want := range map[string]string{
		"":                          "fr",
		"ar-MA,ar;q=0.9,fr;q=0.8":   "ar",
		"en-US,en;q=0.9":            "fr",
		"fr;q=0.5, ar;q=0.7":        "ar",
		"de, fr-FR;q=0.9, ar;q=0.1": "fr",
		"ar;q=garbage, fr;q=0.2":    "ar",
		strings.Repeat("x,", 1000):  "fr",
	} {
		if got := FromAcceptLanguage(h); got != want {
			t.Errorf("Accept-Language %q: %s, want %s", h, got, want)
		}
	}
	p := New(Config{Federation: fed(t), Auth: noSession{}})
	mux := http.NewServeMux()
	for pat, h := range p.Routes() {
		mux.Handle(pat, h)
	}
	get := func(url string, hdr ...string) *http.Response {
		r := httptest.NewRequest("GET", url, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w.Result()
	}
	body := func(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

	ar := get("/citizen/", "Accept-Language", "ar")
	if b := body(ar); !strings.Contains(b, `<html lang="ar" dir="rtl">`) || !strings.Contains(b, "طلبات تنتظر ردكم") || strings.Contains(b, "Demandes en attente") {
		t.Fatalf("Arabic page:\n%s", b)
	}
	if csp := ar.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("CSP %q", csp)
	}
	// The switch wins over the browser and is remembered.
	fr := get("/citizen/?lang=fr", "Accept-Language", "ar")
	if b := body(fr); !strings.Contains(b, `<html lang="fr" dir="ltr">`) || !strings.Contains(b, `href="?lang=ar"`) {
		t.Fatalf("French page:\n%s", b)
	}
	var ck *http.Cookie
	for _, c := range fr.Cookies() {
		if c.Name == LangCookie {
			ck = c
		}
	}
	if ck == nil || ck.Value != "fr" || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("language cookie %v", ck)
	}
	if b := body(get("/citizen/", "Accept-Language", "ar", "Cookie", LangCookie+"=fr")); !strings.Contains(b, `lang="fr"`) {
		t.Fatal("the remembered choice is not used")
	}
	// A language that is not the page's is ignored, never echoed.
	if b := body(get("/citizen/?lang=%22%3E%3Cscript%3E", "Cookie", LangCookie+"=<x>")); !strings.Contains(b, `lang="fr"`) || strings.Contains(b, "<x>") {
		t.Fatal("a bad language was used")
	}
	// The live view needs a session.
	if r := get("/citizen/events"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without a session: %d", r.StatusCode)
	}
	// Every member, field and purpose the rules name has both labels.
	f := fed(t)
	for _, lang := range Languages {
		for _, m := range f.Members {
			if m.Titles[lang] == "" {
				t.Errorf("member %s has no %s title", m.Name, lang)
			}
		}
		for _, r := range f.Rules {
			for _, fl := range r.Fields {
				if f.Labels.Field(fl, lang) == "" {
					t.Errorf("field %s has no %s label", fl, lang)
				}
			}
			for _, pp := range r.Purposes {
				if f.Labels.Purpose(pp, lang) == "" {
					t.Errorf("purpose %s has no %s label", pp, lang)
				}
			}
		}
	}
}
