package citizen_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/ckey"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/citizen/devidp"
)

const (
	alice  = "AB123456"
	bob    = "CD654321"
	secret = "test-client-secret"
	evil   = "https://evil.example"
)

// clock is a settable time for session expiry.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// site is a relying party (citizen.Auth) on a real loopback HTTP server,
// signed in through a real OpenID Provider (devidp), with two probe routes:
// GET /whoami answers the session's citizen key, POST /change counts the
// state changes it let through.
type site struct {
	url     string
	idp     *devidp.Provider
	auth    *citizen.Auth
	keyer   *ckey.Keyer
	clock   *clock
	roots   *x509.CertPool
	mu      sync.Mutex
	changes int
}

type siteOptions struct {
	secure bool
	demo   bool
	noOIDC bool
}

func newSite(t *testing.T, o siteOptions) *site {
	t.Helper()
	fed, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, ckey.KeySize)
	rand.Read(key)
	keyer, err := ckey.New(key)
	if err != nil {
		t.Fatal(err)
	}
	idp, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Citizens:     []devidp.Citizen{{EID: alice}, {EID: bob}},
		ClientSecret: secret, ACR: citizen.DefaultACR, Log: bustest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close(context.Background()) })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "http"
	if o.secure {
		scheme = "https"
	}
	s := &site{url: scheme + "://" + lis.Addr().String(), idp: idp, keyer: keyer,
		clock: &clock{t: time.Now()}}
	cfg := citizen.Config{
		Federation: fed, Keyer: keyer, DemoLogin: o.demo, Secure: o.secure,
		IdleTimeout: 10 * time.Minute, MaxAge: time.Hour, Now: s.clock.now,
		Log: bustest.Logger(t),
	}
	if !o.noOIDC {
		cfg.OIDC = &citizen.OIDC{
			Issuer: idp.Issuer(), ClientID: idp.ClientID(), ClientSecret: secret,
			RedirectURL: s.url + citizen.PathCallback,
		}
		idp.AllowRedirect(cfg.OIDC.RedirectURL)
	}
	if s.auth, err = citizen.New(cfg); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range s.auth.Routes() {
		mux.Handle(p, h)
	}
	mux.HandleFunc("GET "+citizen.AfterLogin+"{$}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "the page") })
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		ck, err := s.auth.AuthenticateRequest(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, ck)
	})
	mux.HandleFunc("POST /change", func(w http.ResponseWriter, r *http.Request) {
		_, err := s.auth.AuthenticateRequest(r)
		switch {
		case errors.Is(err, citizen.ErrCrossOrigin):
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		s.mu.Lock()
		s.changes++
		s.mu.Unlock()
	})
	srv := &http.Server{Handler: citizen.Protect(mux, o.secure), ReadHeaderTimeout: 5 * time.Second}
	if o.secure {
		srv.TLSConfig, s.roots = localTLS(t)
		go srv.ServeTLS(lis, "", "")
	} else {
		go srv.Serve(lis)
	}
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *site) changeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changes
}

func (s *site) client(t *testing.T) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	if s.roots != nil {
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS13}}
	}
	return c
}

var requestField = regexp.MustCompile(`name="request" value="([^"]+)"`)

// toCallback runs the flow up to the provider's answer: it returns the
// callback URL the provider sends the browser to, without following it.
func (s *site) toCallback(t *testing.T, c *http.Client, eid string) string {
	t.Helper()
	resp, err := c.Get(s.url + citizen.PathLogin)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := requestField.FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("provider login page: %s %s", resp.Status, page)
	}
	noFollow := *c
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = noFollow.PostForm(s.idp.Issuer()+"/login", url.Values{"request": {string(m[1])}, "eid": {eid}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Through the provider's own redirects, up to the one to the site.
	for range 5 {
		if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
			t.Fatalf("provider login: %s", resp.Status)
		}
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(loc.String(), s.url+"/") {
			return loc.String()
		}
		if resp, err = noFollow.Get(loc.String()); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	t.Fatal("the provider never sent the browser back")
	return ""
}

// signIn runs the whole flow and returns the client, signed in.
func (s *site) signIn(t *testing.T, c *http.Client, eid string) {
	t.Helper()
	resp, err := c.Get(s.toCallback(t, c, eid))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "the page" {
		t.Fatalf("callback: %s %s", resp.Status, b)
	}
}

// whoami answers the status and citizen key of a GET with c's cookies and
// the extra header lines.
func (s *site) whoami(t *testing.T, c *http.Client, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.url+"/whoami", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, c, req)
}

func (s *site) post(t *testing.T, c *http.Client, path string, hdr ...string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+path, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	code, _ := do(t, c, req)
	return code
}

func do(t *testing.T, c *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (s *site) sessionCookie(t *testing.T, c *http.Client) *http.Cookie {
	t.Helper()
	u, _ := url.Parse(s.url + "/")
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == s.auth.CookieName() {
			return ck
		}
	}
	t.Fatal("no session cookie")
	return nil
}

func TestSignInThroughTheProvider(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{false, true} {
		name := map[bool]string{false: "loopback-plaintext", true: "tls"}[secure]
		t.Run(name, func(t *testing.T) {
			s := newSite(t, siteOptions{secure: secure})
			c := s.client(t)
			// The redirect to the provider carries PKCE, state, nonce and acr.
			noFollow := *c
			noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			resp, err := noFollow.Get(s.url + citizen.PathLogin)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			q := loc.Query()
			if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || q.Get("state") == "" ||
				q.Get("nonce") == "" || q.Get("acr_values") != citizen.DefaultACR || q.Get("client_id") != s.idp.ClientID() {
				t.Fatalf("authorization request %s", loc)
			}

			s.signIn(t, c, strings.ToLower(alice)) // the eID claim is normalised
			if code, ck := s.whoami(t, c); code != http.StatusOK || ck != s.keyer.CKey(alice) {
				t.Fatalf("whoami: %d %q", code, ck)
			}
			cookie := s.sessionCookie(t, c)
			if secure != strings.HasPrefix(cookie.Name, "__Host-") || len(cookie.Value) != 43 {
				t.Fatalf("session cookie %q", cookie.Name)
			}
		})
	}
}

// The cookie's attributes as the server sets them.
func TestSessionCookieAttributes(t *testing.T) {
	t.Parallel()
	for _, secure := range []bool{false, true} {
		s := newSite(t, siteOptions{secure: secure, demo: true})
		c := s.client(t)
		resp, err := c.PostForm(s.url+citizen.PathLogin, url.Values{"eid": {alice}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var got *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == s.auth.CookieName() {
				got = ck
			}
		}
		if got == nil || !got.HttpOnly || got.SameSite != http.SameSiteStrictMode || got.Path != "/" || got.Secure != secure {
			t.Fatalf("secure=%v: cookie %+v", secure, got)
		}
	}
}

func TestForgedSessionsAreRefused(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	c := s.client(t)
	s.signIn(t, c, alice)
	real := s.sessionCookie(t, c).Value
	plain := &http.Client{Timeout: 10 * time.Second}
	for _, forged := range []string{
		strings.Repeat("A", 43),         // the right shape, never issued
		real[:42] + flip(real[42]),      // one character off
		real + "A",                      // too long
		"",                              // empty
		s.keyer.CKey(alice),             // the citizen key itself
		strings.Repeat("A", 42) + "%00", // junk
	} {
		for _, hdr := range [][]string{{"Cookie", s.auth.CookieName() + "=" + forged}, {"Authorization", "Bearer " + forged}} {
			if code, _ := s.whoami(t, plain, hdr...); code != http.StatusUnauthorized {
				t.Errorf("forged %q in %s: %d", forged, hdr[0], code)
			}
		}
	}
}

func flip(b byte) string {
	if b == 'A' {
		return "B"
	}
	return "A"
}

func TestLogoutKillsTheSessionAndReplayFails(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	c := s.client(t)
	s.signIn(t, c, alice)
	stolen := s.sessionCookie(t, c).Value
	// A cross-origin logout is refused and the session lives on.
	if code := s.post(t, c, citizen.PathLogout, "Origin", evil, "Sec-Fetch-Site", "cross-site"); code != http.StatusForbidden {
		t.Fatalf("cross-origin logout: %d", code)
	}
	if code, _ := s.whoami(t, c); code != http.StatusOK {
		t.Fatalf("after refused logout: %d", code)
	}
	// A logout by GET (an image tag, a link) does nothing.
	if resp, err := c.Get(s.url + citizen.PathLogout); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Content-Security-Policy") == "" {
			t.Fatalf("GET logout: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
		}
	}
	if code, _ := s.whoami(t, c); code != http.StatusOK {
		t.Fatalf("after GET logout: %d", code)
	}
	if code := s.post(t, c, citizen.PathLogout, "Origin", s.url); code != http.StatusNoContent {
		t.Fatalf("logout: %d", code)
	}
	if code, _ := s.whoami(t, c); code != http.StatusUnauthorized {
		t.Fatalf("after logout: %d", code)
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	for _, hdr := range [][]string{{"Cookie", s.auth.CookieName() + "=" + stolen}, {"Authorization", "Bearer " + stolen}} {
		if code, _ := s.whoami(t, plain, hdr...); code != http.StatusUnauthorized {
			t.Fatalf("replayed session after logout (%s): %d", hdr[0], code)
		}
	}
}

func TestSessionIsRotatedAtLogin(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	c := s.client(t)
	s.signIn(t, c, alice)
	first := s.sessionCookie(t, c).Value
	s.signIn(t, c, bob)
	second := s.sessionCookie(t, c).Value
	if first == second {
		t.Fatal("the session ID was not rotated")
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if code, _ := s.whoami(t, plain, "Authorization", "Bearer "+first); code != http.StatusUnauthorized {
		t.Fatalf("the session before the new login still works: %d", code)
	}
	if code, ck := s.whoami(t, c); code != http.StatusOK || ck != s.keyer.CKey(bob) {
		t.Fatalf("new session: %d", code)
	}
}

func TestSessionsExpire(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		s := newSite(t, siteOptions{})
		c := s.client(t)
		s.signIn(t, c, alice)
		s.clock.add(9 * time.Minute)
		if code, _ := s.whoami(t, c); code != http.StatusOK {
			t.Fatalf("within the idle time: %d", code)
		}
		s.clock.add(10 * time.Minute)
		if code, _ := s.whoami(t, c); code != http.StatusUnauthorized {
			t.Fatalf("after the idle time: %d", code)
		}
	})
	t.Run("absolute", func(t *testing.T) {
		s := newSite(t, siteOptions{})
		c := s.client(t)
		s.signIn(t, c, alice)
		for range 6 { // active every 9 minutes: never idle, 54 minutes in
			s.clock.add(9 * time.Minute)
			if code, _ := s.whoami(t, c); code != http.StatusOK {
				t.Fatalf("active session refused: %d", code)
			}
		}
		s.clock.add(9 * time.Minute) // 63 minutes: past the hour
		if code, _ := s.whoami(t, c); code != http.StatusUnauthorized {
			t.Fatalf("after the absolute lifetime: %d", code)
		}
	})
}

// A provider answer that does not hold gives no session.
func TestCallbackRefusals(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		tamper func(map[string]any)
		edit   func(u *url.URL)                 // of the callback URL
		jar    func(c *http.Client, u *url.URL) // of the browser
		code   int
	}{
		{name: "state mismatch", edit: func(u *url.URL) { setQuery(u, "state", "bm90LXRoZS1zdGF0ZQ") }, code: http.StatusBadRequest},
		{name: "no state", edit: func(u *url.URL) { setQuery(u, "state", "") }, code: http.StatusBadRequest},
		{name: "login cookie forged", jar: func(c *http.Client, u *url.URL) {
			for _, ck := range c.Jar.Cookies(u) {
				if ck.Name == "jisr_login" {
					ck.Value = ck.Value[:len(ck.Value)-2] + "AA"
					c.Jar.SetCookies(u, []*http.Cookie{ck})
				}
			}
		}, code: http.StatusBadRequest},
		{name: "login cookie missing", jar: func(c *http.Client, _ *url.URL) { c.Jar, _ = cookiejar.New(nil) }, code: http.StatusBadRequest},
		{name: "code altered", edit: func(u *url.URL) { setQuery(u, "code", "x"+u.Query().Get("code")) }, code: http.StatusUnauthorized},
		{name: "nonce mismatch", tamper: func(c map[string]any) { c["nonce"] = "another-nonce" }, code: http.StatusUnauthorized},
		{name: "no nonce", tamper: func(c map[string]any) { delete(c, "nonce") }, code: http.StatusUnauthorized},
		{name: "wrong acr", tamper: func(c map[string]any) { c["acr"] = "urn:loa:low" }, code: http.StatusForbidden},
		{name: "no acr", tamper: func(c map[string]any) { delete(c, "acr") }, code: http.StatusForbidden},
		{name: "other audience", tamper: func(c map[string]any) { c["aud"] = "another-client" }, code: http.StatusUnauthorized},
		{name: "other issuer", tamper: func(c map[string]any) { c["iss"] = "https://evil.example" }, code: http.StatusUnauthorized},
		{name: "expired", tamper: func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }, code: http.StatusUnauthorized},
		{name: "no eID claim", tamper: func(c map[string]any) { delete(c, "cnie") }, code: http.StatusUnauthorized},
		{name: "bad eID", tamper: func(c map[string]any) { c["cnie"] = "a.b>*" }, code: http.StatusUnauthorized},
		{name: "eID in another claim", tamper: func(c map[string]any) { c["eid"] = c["cnie"]; delete(c, "cnie") }, code: http.StatusUnauthorized},
		// Attacks of phase 2 (r12-attack): other types and spellings.
		{name: "acr an array of the accepted value", tamper: func(c map[string]any) { c["acr"] = []string{citizen.DefaultACR} }, code: http.StatusForbidden},
		{name: "acr with a trailing space", tamper: func(c map[string]any) { c["acr"] = citizen.DefaultACR + " " }, code: http.StatusForbidden},
		{name: "eID a number", tamper: func(c map[string]any) { c["cnie"] = 123456 }, code: http.StatusUnauthorized},
		{name: "eID an array", tamper: func(c map[string]any) { c["cnie"] = []string{alice} }, code: http.StatusUnauthorized},
		{name: "eID with a letter whose upper case is ASCII", tamper: func(c map[string]any) { c["cnie"] = "Aſ123456" }, code: http.StatusUnauthorized},
		{name: "eID with a Unicode space", tamper: func(c map[string]any) { c["cnie"] = "\u00a0" + alice }, code: http.StatusUnauthorized},
	}
	s := newSite(t, siteOptions{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.idp.SetTamper(tc.tamper)
			defer s.idp.SetTamper(nil)
			c := s.client(t)
			u, _ := url.Parse(s.toCallback(t, c, alice))
			if tc.edit != nil {
				tc.edit(u)
			}
			if tc.jar != nil {
				tc.jar(c, u)
			}
			resp, err := c.Get(u.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("callback: %d, want %d", resp.StatusCode, tc.code)
			}
			if code, _ := s.whoami(t, c); code != http.StatusUnauthorized {
				t.Fatalf("a session after a refused callback: %d", code)
			}
		})
	}
	// A callback replayed (same browser, same code and state) is refused:
	// the state is used once.
	c := s.client(t)
	cb := s.toCallback(t, c, alice)
	resp, err := c.Get(cb)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	other := s.client(t)
	resp, err = other.Get(cb)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a callback URL replayed in another browser: %d", resp.StatusCode)
	}
	if code, _ := s.whoami(t, other); code != http.StatusUnauthorized {
		t.Fatal("the replayed callback made a session")
	}
	// Replayed with the sealed login cookie copied too, after the sign-in
	// succeeded: the code was spent, so no second session.
	c = s.client(t)
	cb = s.toCallback(t, c, alice)
	cbURL, _ := url.Parse(cb)
	stolen := c.Jar.Cookies(cbURL)
	resp, err = c.Get(cb)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := s.whoami(t, c); code != http.StatusOK {
		t.Fatalf("the sign-in itself: %d", code)
	}
	thief := s.client(t)
	thief.Jar.SetCookies(cbURL, stolen)
	resp, err = thief.Get(cb)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _ := s.whoami(t, thief); resp.StatusCode == http.StatusOK || code != http.StatusUnauthorized {
		t.Fatalf("a callback replayed with the login cookie: %d, whoami %d", resp.StatusCode, code)
	}
}

func setQuery(u *url.URL, k, v string) {
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
}

func TestStateChangesRefuseCrossOrigin(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{demo: true})
	c := s.client(t)
	s.signIn(t, c, alice)
	bearer := "Bearer " + s.sessionCookie(t, c).Value
	plain := &http.Client{Timeout: 10 * time.Second}
	cases := []struct {
		name   string
		client *http.Client
		hdr    []string
		code   int
	}{
		{"cross-site with the cookie", c, []string{"Origin", evil, "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"foreign Origin with the cookie", c, []string{"Origin", evil}, http.StatusForbidden},
		{"same-site sibling with the cookie", c, []string{"Sec-Fetch-Site", "same-site"}, http.StatusForbidden},
		{"cookie without Origin", c, nil, http.StatusForbidden},
		{"Origin null (sandboxed frame) with the cookie", c, []string{"Origin", "null"}, http.StatusForbidden},
		{"Origin of another port with the cookie", c, []string{"Origin", "http://127.0.0.1:1"}, http.StatusForbidden},
		{"Sec-Fetch-Site cross-site with our own Origin", c, []string{"Sec-Fetch-Site", "cross-site", "Origin", s.url}, http.StatusForbidden},
		{"cross-site with a bearer", plain, []string{"Authorization", bearer, "Origin", evil, "Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"no session", plain, []string{"Origin", s.url}, http.StatusUnauthorized},
		{"same origin with the cookie", c, []string{"Origin", s.url}, http.StatusOK},
		{"Sec-Fetch-Site same-origin with the cookie", c, []string{"Sec-Fetch-Site", "same-origin"}, http.StatusOK},
		{"bearer from an API client", plain, []string{"Authorization", bearer}, http.StatusOK},
	}
	want := 0
	for _, tc := range cases {
		if code := s.post(t, tc.client, "/change", tc.hdr...); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
		if tc.code == http.StatusOK {
			want++
		}
	}
	if got := s.changeCount(); got != want {
		t.Fatalf("%d state changes went through, want %d", got, want)
	}
	// The login form itself refuses a cross-origin post.
	req, _ := http.NewRequest(http.MethodPost, s.url+citizen.PathLogin, strings.NewReader("eid="+bob))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", evil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	fresh := s.client(t)
	if code, _ := do(t, fresh, req); code != http.StatusForbidden {
		t.Fatalf("cross-origin demo login: %d", code)
	}
	if code, _ := s.whoami(t, fresh); code != http.StatusUnauthorized {
		t.Fatal("a cross-origin login made a session")
	}
}

func TestDemoLoginIsOffUnlessAsked(t *testing.T) {
	t.Parallel()
	s := newSite(t, siteOptions{})
	c := s.client(t)
	resp, err := c.PostForm(s.url+citizen.PathLogin, url.Values{"eid": {alice}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("demo login without DemoLogin: %d", resp.StatusCode)
	}
	if code, _ := s.whoami(t, c); code != http.StatusUnauthorized {
		t.Fatal("signed in by eID alone")
	}
	// No provider configured: no sign-in at all.
	off := newSite(t, siteOptions{noOIDC: true})
	resp, err = c.Get(off.url + citizen.PathLogin)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("OIDC login without a provider: %d", resp.StatusCode)
	}
}

func TestConfigRefusesPlaintextIssuerOffLoopback(t *testing.T) {
	t.Parallel()
	fed, err := federation.Load("../testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keyer, _ := ckey.New(make([]byte, ckey.KeySize))
	for _, o := range []citizen.OIDC{
		{Issuer: "http://idp.example", ClientID: "c", ClientSecret: "s", RedirectURL: "https://gw.example/access-log/callback"},
		{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", RedirectURL: "http://gw.example/access-log/callback"},
		{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "", RedirectURL: "https://gw.example/access-log/callback"},
		{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", RedirectURL: "https://gw.example/elsewhere"},
	} {
		if _, err := citizen.New(citizen.Config{Federation: fed, Keyer: keyer, OIDC: &o}); !errors.Is(err, citizen.ErrConfig) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

// A sign-in for another population (Identify) has no demo login and no
// eID: it needs OIDC, refuses DemoLogin, serves no POST login, and its
// redirect URL must be its own callback path.
func TestIdentifySignInConfig(t *testing.T) {
	t.Parallel()
	id := func(map[string]any) (string, error) { return "x", nil }
	paths := citizen.Paths{Login: "/console/login", Callback: "/console/callback", Logout: "/console/logout", Session: "/console/session", After: "/console/"}
	o := func(ru string) *citizen.OIDC {
		return &citizen.OIDC{Issuer: "https://idp.example", ClientID: "c", ClientSecret: "s", RedirectURL: ru}
	}
	for name, cfg := range map[string]citizen.Config{
		"no OIDC":          {Identify: id, Paths: paths},
		"demo login":       {Identify: id, Paths: paths, DemoLogin: true, OIDC: o("https://gw.example/console/callback")},
		"citizen's path":   {Identify: id, Paths: paths, OIDC: o("https://gw.example/access-log/callback")},
		"plaintext issuer": {Identify: id, Paths: paths, OIDC: &citizen.OIDC{Issuer: "http://idp.example", ClientID: "c", ClientSecret: "s", RedirectURL: "https://gw.example/console/callback"}},
	} {
		if _, err := citizen.New(cfg); !errors.Is(err, citizen.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	a, err := citizen.New(citizen.Config{Identify: id, Paths: paths, CookiePrefix: "jisr_console", Secure: true, OIDC: o("https://gw.example/console/callback")})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Routes()["POST /console/login"]; ok {
		t.Fatal("a sign-in with Identify serves the demo login")
	}
	if a.CookieName() != "__Host-jisr_console_session" {
		t.Fatalf("cookie %q", a.CookieName())
	}
}

// One citizen signing in again and again cannot fill the session store:
// past citizen.SessionsPerCitizen sessions, each sign-in ends that citizen's oldest.
func TestOneCitizenCannotFillTheSessionStore(t *testing.T) {
	s := newSite(t, siteOptions{})
	var clients []*http.Client
	for range citizen.SessionsPerCitizen + 1 {
		c := s.client(t)
		s.signIn(t, c, alice)
		clients = append(clients, c)
	}
	if code, _ := s.whoami(t, clients[0]); code != http.StatusUnauthorized {
		t.Fatalf("the oldest of %d sessions of one citizen still works: %d", citizen.SessionsPerCitizen+1, code)
	}
	for i, c := range clients[1:] {
		if code, _ := s.whoami(t, c); code != http.StatusOK {
			t.Fatalf("session %d of the newest %d refused: %d", i+1, citizen.SessionsPerCitizen, code)
		}
	}
	// Another citizen still signs in.
	c := s.client(t)
	s.signIn(t, c, bob)
	if code, _ := s.whoami(t, c); code != http.StatusOK {
		t.Fatalf("another citizen refused: %d", code)
	}
}
