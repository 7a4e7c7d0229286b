package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/citizen/devidp"
	"github.com/jisr-bus/jisr/gateway/console"
)

const demoAuditor = "auditor-1" // the demo provider's user with the role

// oidcHarness is the console with the OIDC sign-in of the auditor's role
// (gateway/citizen's sign-in configured by console.IdentifyByRole) and a
// real OpenID Provider (devidp) that knows an auditor and a citizen.
func oidcHarness(t *testing.T) (*harness, *devidp.Provider) {
	t.Helper()
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Citizens:     []devidp.Citizen{{EID: demoAuditor, Roles: []string{"auditor"}}, {EID: alice}, {EID: bob, Roles: []string{"clerk"}}},
		ClientSecret: "console-secret", ACR: citizen.DefaultACR, Log: bustest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close(context.Background()) })
	h := newHarnessWith(t, harnessOptions{rules: console.Rules{ProbingRefusals: 10, HoursFrom: 0, HoursTo: 24},
		signIn: func(base string) (console.Sessions, map[string]http.Handler) {
			idp.AllowRedirect(base + console.PathCallback)
			a, err := citizen.New(citizen.Config{
				OIDC: &citizen.OIDC{Issuer: idp.Issuer(), ClientID: idp.ClientID(), ClientSecret: "console-secret",
					RedirectURL: base + console.PathCallback},
				Secure: true, Log: bustest.Logger(t), CookiePrefix: "jisr_console",
				Identify: console.IdentifyByRole("roles", "auditor"),
				Paths: citizen.Paths{Login: console.PathLogin, Callback: console.PathCallback, Logout: console.PathLogout,
					Session: console.PathSession, After: "/console/"},
			})
			if err != nil {
				t.Fatal(err)
			}
			return a, a.Routes()
		}})
	return h, idp
}

// browser is a client without a certificate, with a cookie jar, that
// checks the console is the gateway.
func (h *harness) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := tlsconfig.TLSClientConfig(h.env.Source(t, h.env.ID("auditor")), tlsconfig.AuthorizeID(h.env.ID("gateway")))
	return &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: c}, Timeout: 30 * time.Second}
}

var requestField = regexp.MustCompile(`name="request" value="([^"]+)"`)

// signIn runs the sign-in as user through the provider and returns the
// status of the console's callback.
func signIn(t *testing.T, h *harness, idp *devidp.Provider, c *http.Client, user string) int {
	t.Helper()
	resp, err := c.Get(h.url + console.PathLogin)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := requestField.FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("provider login page: %s %s", resp.Status, page)
	}
	resp, err = c.PostForm(idp.Issuer()+"/login", url.Values{"request": {string(m[1])}, "eid": {user}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Request.URL.String(), h.url+console.PathCallback) {
		t.Fatalf("the sign-in ended at %s, not the console's callback", resp.Request.URL)
	}
	return resp.StatusCode
}

// The auditor signs in by OIDC with the role; the role is required, in its
// claim, as a list; a token from another issuer is refused; the session is
// refused cross-origin; and every look is recorded under the human who
// signed in. The auditor's certificate still works beside it.
func TestOIDCSignInWithTheAuditorRole(t *testing.T) {
	h, idp := oidcHarness(t)
	h.append(t, allowed("cnss", alice, h, "GetPerson"))
	h.waitRows(t, console.Filter{}, 1)

	// Without certificate or session: 401 (the handshake now lets browsers in).
	if code, _ := get(t, h.browser(t), h.url+"/console/"); code != http.StatusUnauthorized {
		t.Fatalf("no certificate, no session: %d, want 401", code)
	}
	// A member's certificate is still refused, the auditor's still admitted.
	if code, _ := get(t, h.client(t, h.env.Source(t, h.env.ID("cnss"))), h.url+"/console/"); code != http.StatusForbidden {
		t.Fatalf("a member's certificate: %d, want 403", code)
	}
	if code, _ := get(t, h.auditor(t), h.url+"/console/"); code != http.StatusOK {
		t.Fatalf("the auditor's certificate: %d, want 200", code)
	}

	// A citizen without the role, a user with another role: refused, no session.
	for _, user := range []string{alice, bob} {
		c := h.browser(t)
		if code := signIn(t, h, idp, c, user); code != http.StatusForbidden {
			t.Fatalf("%s's sign-in: %d, want 403", user, code)
		}
		if code, body := get(t, c, h.url+"/console/"); code != http.StatusUnauthorized {
			t.Fatalf("%s after a refused sign-in: %d %s", user, code, body)
		}
	}
	// The role in the wrong place or of the wrong type; another issuer.
	for _, tc := range []struct {
		name   string
		tamper func(map[string]any)
		code   int
	}{
		{"role as a string", func(c map[string]any) { c["roles"] = "auditor" }, http.StatusForbidden},
		{"role as an object", func(c map[string]any) { c["roles"] = map[string]any{"auditor": true} }, http.StatusForbidden},
		{"role nested in another claim", func(c map[string]any) {
			c["realm_access"] = map[string]any{"roles": c["roles"]}
			delete(c, "roles")
		}, http.StatusForbidden},
		{"role in a list of lists", func(c map[string]any) { c["roles"] = []any{[]any{"auditor"}} }, http.StatusForbidden},
		{"role in another case", func(c map[string]any) { c["roles"] = []any{"Auditor"} }, http.StatusForbidden},
		{"other issuer", func(c map[string]any) { c["iss"] = "https://evil.example" }, http.StatusUnauthorized},
		{"other audience", func(c map[string]any) { c["aud"] = "jisr-citizens" }, http.StatusUnauthorized},
	} {
		idp.SetTamper(tc.tamper)
		c := h.browser(t)
		if code := signIn(t, h, idp, c, demoAuditor); code != tc.code {
			t.Fatalf("%s: %d, want %d", tc.name, code, tc.code)
		}
		if code, _ := get(t, c, h.url+"/console/"); code != http.StatusUnauthorized {
			t.Fatalf("%s: the console answered %d after a refused sign-in", tc.name, code)
		}
	}
	idp.SetTamper(nil)

	// The auditor with the role gets in.
	c := h.browser(t)
	if code := signIn(t, h, idp, c, demoAuditor); code != http.StatusOK {
		t.Fatalf("the auditor's sign-in: %d", code)
	}
	if code, body := get(t, c, h.url+"/console/?consumer=cnss"); code != http.StatusOK || !strings.Contains(body, "GetPerson") {
		t.Fatalf("the signed-in auditor: %d\n%s", code, body)
	}
	// Cross-origin, whatever the method: refused, and nothing is shown.
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"}, // another port of this host: the citizen page
		{"Origin": "https://evil.example"},
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			path := "/console/"
			if method == http.MethodPost {
				path = "/console/integrity"
			}
			req, _ := http.NewRequest(method, h.url+path, nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || strings.Contains(string(b), "GetPerson") {
				t.Fatalf("%s %s with %v: %d, want 403", method, path, hdr, resp.StatusCode)
			}
		}
	}
	// A state change by cookie without proof of origin is refused too.
	resp, err := c.Post(h.url+"/console/integrity", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST without Origin: %d, want 403", resp.StatusCode)
	}

	// Every look is recorded under the human: oidc:<issuer>#<subject>;
	// the certificate's under the auditor's SPIFFE ID.
	var byHuman, byCert int
	bustest.Eventually(t, 20*time.Second, func() error {
		byHuman, byCert = 0, 0
		err := h.store.Each(t.Context(), console.Filter{Consumer: "auditor"}, func(r console.Row) error {
			switch {
			case strings.Contains(string(r.Data), console.OIDCPrefix+idp.Issuer()+"#"):
				byHuman++
			case strings.Contains(string(r.Data), h.env.ID("auditor").String()):
				byCert++
			}
			return nil
		})
		if err != nil {
			return err
		}
		return bustest.Check(byHuman == 1 && byCert == 1, "one look by the signed-in auditor, one by the certificate")
	})

	// Logout ends the session.
	req, _ := http.NewRequest(http.MethodPost, h.url+console.PathLogout, nil)
	req.Header.Set("Origin", h.url)
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := get(t, c, h.url+"/console/"); code != http.StatusUnauthorized {
		t.Fatalf("after logout: %d, want 401", code)
	}
}

// The gateway's main port's /v1/traces ignores the console's session.
func TestTracesOnTheMainPortIgnoreTheSession(t *testing.T) {
	h, idp := oidcHarness(t)
	c := h.browser(t)
	if code := signIn(t, h, idp, c, demoAuditor); code != http.StatusOK {
		t.Fatalf("the auditor's sign-in: %d", code)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/traces/{id}", h.srv.TracesHandler())
	req, _ := http.NewRequest(http.MethodGet, h.url+"/v1/traces/0123456789abcdef0123456789abcdef", nil)
	for _, ck := range c.Jar.Cookies(req.URL) {
		req.AddCookie(ck)
	}
	rec := &recorder{h: http.Header{}}
	mux.ServeHTTP(rec, req)
	if rec.code != http.StatusUnauthorized {
		t.Fatalf("/v1/traces on the main port with the console's session: %d, want 401", rec.code)
	}
	// On the console's port the same session reads traces.
	if code, _ := get(t, c, h.url+"/v1/traces/0123456789abcdef0123456789abcdef"); code == http.StatusUnauthorized || code == http.StatusForbidden {
		t.Fatalf("/v1/traces on the console's port with the session: %d", code)
	}
}
