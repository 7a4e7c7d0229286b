package devidp_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/citizen/devidp"
)

const (
	secret   = "s3cret"
	redirect = "http://127.0.0.1:1/access-log/callback"
	verifier = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
)

var requestField = regexp.MustCompile(`name="request" value="([^"]+)"`)

func challenge(v string) string {
	sum := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// The demo provider is only a stand-in, but it must hold the protocol's
// line: registered redirect only, PKCE S256 required, the client
// authenticated, a code used once, demo citizens only, loopback only.
func TestProviderRefusesOffProtocolRequests(t *testing.T) {
	t.Parallel()
	if _, err := devidp.Start("0.0.0.0:0", devidp.Config{ClientSecret: secret, ACR: "x"}); err == nil {
		t.Fatal("started off loopback")
	}
	p, err := devidp.Start("127.0.0.1:0", devidp.Config{
		Citizens: []devidp.Citizen{{EID: "AB123456"}}, ClientSecret: secret, ACR: "urn:test:high",
		RedirectURLs: []string{redirect}, Log: bustest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	good := url.Values{
		"client_id": {p.ClientID()}, "redirect_uri": {redirect}, "response_type": {"code"}, "scope": {"openid"},
		"state": {"st"}, "nonce": {"no"}, "code_challenge": {challenge(verifier)}, "code_challenge_method": {"S256"},
		"acr_values": {"urn:test:high"},
	}
	// authorize answers the login page, or "" when the provider refused:
	// 400, or a redirect to the client with an error (which op chooses once
	// the redirect URL is known good).
	follow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host != strings.TrimPrefix(p.Issuer(), "http://") {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	authorize := func(edit func(url.Values)) string {
		q := url.Values{}
		for k, v := range good {
			q[k] = v
		}
		if edit != nil {
			edit(q)
		}
		resp, err := follow.Get(p.Issuer() + "/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		switch {
		case resp.StatusCode == http.StatusOK:
			return string(b)
		case resp.StatusCode == http.StatusBadRequest:
			return ""
		case resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusSeeOther:
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if loc.Query().Get("error") == "" || loc.Query().Get("code") != "" {
				t.Fatalf("redirect without an error: %s", loc)
			}
			if !strings.HasPrefix(loc.String(), redirect) {
				t.Fatalf("error sent to an unregistered URL: %s", loc)
			}
			return ""
		}
		t.Fatalf("authorize: %d %s", resp.StatusCode, b)
		return ""
	}
	for name, edit := range map[string]func(url.Values){
		"unknown client":      func(q url.Values) { q.Set("client_id", "other") },
		"unregistered return": func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") },
		"implicit flow":       func(q url.Values) { q.Set("response_type", "token") },
		"no openid scope":     func(q url.Values) { q.Set("scope", "profile") },
		"no state":            func(q url.Values) { q.Del("state") },
		"no nonce":            func(q url.Values) { q.Del("nonce") },
		"no PKCE":             func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") },
		"PKCE plain":          func(q url.Values) { q.Set("code_challenge_method", "plain") },
		"unknown acr":         func(q url.Values) { q.Set("acr_values", "urn:test:low") },
	} {
		if page := authorize(edit); page != "" {
			t.Errorf("%s: not refused", name)
		}
	}

	// The good path, and what the token endpoint refuses.
	code := func(eid string) string {
		t.Helper()
		m := requestField.FindStringSubmatch(authorize(nil))
		if m == nil {
			t.Fatal("no login page")
		}
		resp, err := follow.PostForm(p.Issuer()+"/login", url.Values{"request": {m[1]}, "eid": {eid}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
			return ""
		}
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if loc.Query().Get("state") != "st" || !strings.HasPrefix(loc.String(), redirect) {
			t.Fatalf("callback %s", loc)
		}
		return loc.Query().Get("code")
	}
	if code("ZZ000000") != "" {
		t.Fatal("a citizen who is not a demo citizen signed in")
	}
	exchange := func(f url.Values, user, pass string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, p.Issuer()+"/oauth/token", strings.NewReader(f.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(user, pass)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	form := func(code, v string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {v}}
	}
	k := code("ab123456")
	if st, _ := exchange(form(k, verifier), p.ClientID(), "wrong"); st != http.StatusUnauthorized && st != http.StatusBadRequest {
		t.Fatalf("wrong client secret: %d", st)
	}
	if st, _ := exchange(form(k, verifier), p.ClientID(), secret); st != http.StatusBadRequest {
		t.Fatalf("a code reused after a wrong client secret: %d", st)
	}
	k = code("ab123456")
	if st, out := exchange(form(k, verifier), p.ClientID(), secret); st != http.StatusOK || out["id_token"] == nil {
		t.Fatalf("exchange: %d %v", st, out)
	}
	if st, _ := exchange(form(k, verifier), p.ClientID(), secret); st != http.StatusBadRequest {
		t.Fatalf("a code used twice: %d", st)
	}
	k = code("AB123456")
	if st, _ := exchange(form(k, strings.Repeat("x", 43)), p.ClientID(), secret); st != http.StatusBadRequest {
		t.Fatalf("wrong PKCE verifier: %d", st)
	}
	// A failed exchange spends the code too.
	if st, _ := exchange(form(k, verifier), p.ClientID(), secret); st != http.StatusBadRequest {
		t.Fatalf("a code reused after a failed exchange: %d", st)
	}
}
