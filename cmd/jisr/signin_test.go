package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/citizen/devidp"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

const idpSecret = "signin-test-secret"

// signinFed is the audit test federation with its gateway restarted as
// `jisr gateway` starts it in a deployment (no demo login), signing citizens
// in through a real OpenID Provider (devidp), with a short read timeout.
type signinFed struct {
	*auditFed
	idp  *devidp.Provider
	base string
}

func startSigninFed(t *testing.T) *signinFed {
	t.Helper()
	f := &signinFed{auditFed: startAuditFed(t, t.TempDir())}
	var err error
	f.idp, err = devidp.Start("127.0.0.1:0", devidp.Config{
		Citizens:     []devidp.Citizen{{EID: eidN(0)}, {EID: eidN(1)}},
		ClientSecret: idpSecret, ACR: citizen.DefaultACR, Log: bustest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.idp.Close(context.Background()) })
	f.stopGateway(t)
	o := process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-1", SignIn: process.SignInOptions{
		OIDCIssuer: f.idp.Issuer(), OIDCClientID: f.idp.ClientID(), OIDCClientSecret: idpSecret,
		OIDCEIDClaim: citizen.DefaultEIDClaim, OIDCACR: []string{citizen.DefaultACR},
		ReadTimeout: time.Second,
	}}
	if f.gw, err = process.StartGateway(context.Background(), f.g, o); err != nil {
		t.Fatalf("gateway: %v\n%s", err, f.logs.String())
	}
	f.base = "http://" + f.gw.Addr()
	f.idp.AllowRedirect(process.RedirectURLFor(f.gw.Addr(), f.gw.Secure()))
	return f
}

var idpRequestField = regexp.MustCompile(`name="request" value="([^"]+)"`)

// signIn runs the OIDC flow in a fresh browser-like client: the gateway's
// login, the provider's page and form, the callback, the access-log page.
func (f *signinFed) signIn(t *testing.T, eid string) *http.Client {
	t.Helper()
	return signInAt(t, f.base, f.idp.Issuer(), eid)
}

func signInAt(t *testing.T, base, issuer, eid string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	resp, err := c.Get(base + citizen.PathLogin)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := idpRequestField.FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("provider page: %s %s", resp.Status, page)
	}
	resp, err = c.PostForm(issuer+"/login", url.Values{"request": {string(m[1])}, "eid": {eid}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/access-log/" || !bytes.Contains(b, []byte("Who looked at my data?")) {
		t.Fatalf("after sign-in: %s %s %s", resp.Status, resp.Request.URL, b)
	}
	return c
}

func (f *signinFed) session(t *testing.T, c *http.Client) string {
	t.Helper()
	u, _ := url.Parse(f.base + "/")
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "jisr_session" {
			return ck.Value
		}
	}
	t.Fatal("no session cookie")
	return ""
}

// call sends one request with a JSON body and header pairs.
func (f *signinFed) call(t *testing.T, c *http.Client, method, path string, body any, hdr ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// count is the length of a JSON list (null or absent: 0).
func count(v any) int {
	l, _ := v.([]any)
	return len(l)
}

// The HTTP attack list, against the gateway as deployed.
func TestGatewaySignInAsDeployed(t *testing.T) {
	f := startSigninFed(t)
	plain := &http.Client{Timeout: 20 * time.Second}
	alice := eidN(0)
	grant := map[string]any{
		"to": "cnss", "service": "jisr.civilregistry.v1.CivilRegistry", "methods": []string{"GetPerson"},
		"purpose": "amo-enrolment", "ttl": "1h",
	}

	// No demo login: an eID alone gets nothing.
	for _, ct := range []string{"application/x-www-form-urlencoded", "application/json"} {
		body := "eid=" + alice
		if ct == "application/json" {
			body = `{"eid":"` + alice + `"}`
		}
		resp, err := plain.Post(f.base+"/access-log/login", ct, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusForbidden {
			t.Fatalf("demo login on the deployed gateway: %d", resp.StatusCode)
		}
		if len(resp.Cookies()) != 0 {
			t.Fatal("the refused demo login set a cookie")
		}
	}
	// No state change and no reading without a session.
	if code, _ := f.call(t, plain, "POST", "/v1/consents", grant, "Origin", f.base); code != http.StatusUnauthorized {
		t.Fatalf("grant without a session: %d", code)
	}
	if code, _ := f.call(t, plain, "GET", "/access-log/v1/accesses", nil); code != http.StatusUnauthorized {
		t.Fatalf("access log without a session: %d", code)
	}

	// The OIDC sign-in through the provider.
	c := f.signIn(t, alice)
	sid := f.session(t, c)

	// A cross-origin grant with the citizen's cookie is refused and mints nothing.
	if code, _ := f.call(t, c, "POST", "/v1/consents", grant, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"); code != http.StatusForbidden {
		t.Fatalf("cross-origin grant: %d", code)
	}
	if code, _ := f.call(t, c, "POST", "/v1/consents", grant); code != http.StatusForbidden {
		t.Fatalf("cookie grant without Origin: %d", code)
	}
	if code, out := f.call(t, c, "GET", "/v1/consents", nil); code != http.StatusOK || count(out["consents"]) != 0 {
		t.Fatalf("consents after refused grants: %d %v", code, out)
	}
	// A forged session.
	if code, _ := f.call(t, plain, "GET", "/access-log/v1/accesses", nil, "Cookie", "jisr_session="+strings.Repeat("A", 43)); code != http.StatusUnauthorized {
		t.Fatalf("forged session: %d", code)
	}

	// Same origin: the citizen grants, CNSS asks, the access log shows it.
	code, out := f.call(t, c, "POST", "/v1/consents", grant, "Origin", f.base)
	if code != http.StatusCreated {
		t.Fatalf("grant: %d %v", code, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := f.cnss.GetPerson(md(ctx, "jisr-purpose", "amo-enrolment", "jisr-consent", out["token"].(string)), &civilv1.GetPersonRequest{Eid: alice}); err != nil {
		t.Fatalf("GetPerson with the granted token: %v", err)
	}
	for {
		code, out := f.call(t, c, "GET", "/access-log/v1/accesses", nil)
		if code != http.StatusOK {
			t.Fatalf("access log: %d %v", code, out)
		}
		// The grant itself is in the log too (CitizenGrant, audited before
		// the token was released), then CNSS's access.
		methods := map[string]map[string]any{}
		as, _ := out["accesses"].([]any)
		for _, a := range as {
			methods[a.(map[string]any)["method"].(string)] = a.(map[string]any)
		}
		if a := methods["GetPerson"]; a != nil && methods["CitizenGrant"] != nil && len(as) == 2 {
			if a["consumer"].(map[string]any)["name"] != "cnss" {
				t.Fatalf("access %v", a)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the access never appeared in the citizen's log")
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Another citizen signed in sees none of it.
	if code, out := f.call(t, f.signIn(t, eidN(1)), "GET", "/access-log/v1/accesses", nil); code != http.StatusOK || count(out["accesses"]) != 0 {
		t.Fatalf("another citizen's log: %d %v", code, out)
	}

	// The page: a CSP without unsafe-inline, and the other headers.
	resp, err := plain.Get(f.base + "/access-log/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("page headers: %v", resp.Header)
	}

	// A slow body is cut by the read timeout: the server answers or closes
	// instead of waiting for the rest.
	conn, err := net.Dial("tcp", f.gw.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /v1/consents HTTP/1.1\r\nHost: "+f.gw.Addr()+"\r\nAuthorization: Bearer "+sid+
		"\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"to\":")
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	reply, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server still waits for a body that never comes")
	}
	if bytes.Contains(reply, []byte("201 Created")) {
		t.Fatalf("slow request granted: %s", reply)
	}

	// Logout kills the session; replaying it gets nothing.
	if code, _ := f.call(t, c, "POST", citizen.PathLogout, nil, "Origin", f.base); code != http.StatusNoContent {
		t.Fatalf("logout: %d", code)
	}
	for _, hdr := range [][]string{{"Cookie", "jisr_session=" + sid}, {"Authorization", "Bearer " + sid}} {
		if code, _ := f.call(t, plain, "GET", "/access-log/v1/accesses", nil, hdr...); code != http.StatusUnauthorized {
			t.Fatalf("replayed session after logout (%s): %d", hdr[0], code)
		}
		if code, _ := f.call(t, plain, "POST", "/v1/consents", grant, append(hdr, "Origin", f.base)...); code != http.StatusUnauthorized {
			t.Fatalf("grant with a replayed session (%s): %d", hdr[0], code)
		}
	}
}

// Off loopback the HTTP side is never plaintext, and the demo login is
// refused at start.
func TestGatewayHTTPOffLoopback(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	f.stopGateway(t)
	ctx := t.Context()

	if _, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: "0.0.0.0:0", Instance: "gw-1", SignIn: process.SignInOptions{DemoLogin: true}}); !errors.Is(err, process.ErrDemoOffLocal) {
		t.Fatalf("demo login off loopback: %v", err)
	}
	if _, err := process.HTTPTLS("0.0.0.0:8080", process.SignInOptions{}, nil, nil); !errors.Is(err, process.ErrHTTPPlaintext) {
		t.Fatalf("plaintext off loopback without a certificate: %v", err)
	}

	gw, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: "0.0.0.0:0", Instance: "gw-1"})
	if err != nil {
		t.Fatalf("gateway: %v\n%s", err, f.logs.String())
	}
	f.gw = gw
	if !gw.Secure() {
		t.Fatal("the HTTP side is plaintext off loopback")
	}
	_, port, _ := net.SplitHostPort(gw.Addr())
	addr := net.JoinHostPort("127.0.0.1", port)
	plain := &http.Client{Timeout: 10 * time.Second}
	if resp, err := plain.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plaintext HTTP answered off loopback")
		}
	}
	// A member with its SVID reaches it over mTLS, TLS 1.3.
	fed, _ := f.g.Federation()
	src, err := svid.Open(ctx, f.g.CertsDir, fed.ID("auditor"), f.g.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tc := svid.ClientTLS(src, tlsconfig.AuthorizeID(fed.ID("gateway")))
	tc.MaxVersion = tls.VersionTLS12
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	if resp, err := c.Get("https://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("TLS 1.2 accepted")
	}
	tc.MaxVersion = 0
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS.Version != tls.VersionTLS13 {
		t.Fatalf("mTLS healthz: %d", resp.StatusCode)
	}
}

// `jisr dev` prints how to sign in, writes the provider's issuer into
// var/demo.json, and a demo citizen signs in through it; an eID alone does
// not sign anyone in unless --demo-login.
func TestDevSignInThroughTheEmbeddedProvider(t *testing.T) {
	f := startDev(t)
	issuer := f.demo.Endpoints["oidc_issuer"]
	if issuer == "" || !strings.Contains(f.out.String(), "Citizen sign-in: open "+f.demo.Endpoints["gateway_http"]+"/access-log/") ||
		!strings.Contains(f.out.String(), issuer) || f.demo.SignIn == "" {
		t.Fatalf("no sign-in printed or in demo.json:\n%s\n%+v", f.out.String(), f.demo.Endpoints)
	}
	base := f.demo.Endpoints["gateway_http"]
	resp, err := http.Post(base+citizen.PathLogin, "application/x-www-form-urlencoded", strings.NewReader("eid="+f.demo.Citizens[0].EID))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("demo login without --demo-login: %d", resp.StatusCode)
	}
	c := signInAt(t, base, issuer, f.demo.Citizens[0].EID)
	resp, err = c.Get(base + "/access-log/v1/accesses")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("access log after sign-in: %d", resp.StatusCode)
	}
}

// --http-cert/--http-key: HTTPS for citizens' browsers (no client
// certificate), TLS 1.3 only.
func TestGatewayHTTPWithACertificate(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	f.stopGateway(t)
	ctx := t.Context()
	dir := t.TempDir()
	certFile, keyFile, roots := writeLocalCert(t, dir)
	if _, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: "0.0.0.0:0", Instance: "gw-1", SignIn: process.SignInOptions{HTTPCert: certFile}}); err == nil {
		t.Fatal("--http-cert without --http-key accepted")
	}
	gw, err := process.StartGateway(ctx, f.g, process.GatewayOptions{HTTPAddr: "0.0.0.0:0", Instance: "gw-1", SignIn: process.SignInOptions{HTTPCert: certFile, HTTPKey: keyFile}})
	if err != nil {
		t.Fatalf("gateway: %v\n%s", err, f.logs.String())
	}
	f.gw = gw
	_, port, _ := net.SplitHostPort(gw.Addr())
	base := "https://" + net.JoinHostPort("127.0.0.1", port)
	tc := &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	if resp, err := c.Get(base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("TLS 1.2 accepted")
	}
	c = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := c.Get(base + "/access-log/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS.Version != tls.VersionTLS13 || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("page over HTTPS: %d %v", resp.StatusCode, resp.Header)
	}
}

// writeLocalCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeLocalCert(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// The sign-in options are checked once, at start.
func TestSignInOptions(t *testing.T) {
	dir := t.TempDir()
	g := &process.Env{FederationPath: "../testdata/federation.yaml", CertsDir: filepath.Join(dir, "certs"), DataDir: dir,
		Log: bustest.Logger(t)}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g, fed); err != nil {
		t.Fatal(err)
	}
	open, closed := filepath.Join(dir, "open"), filepath.Join(dir, "closed")
	os.WriteFile(open, []byte("s3cret\n"), 0o644)
	os.WriteFile(closed, []byte("s3cret\n"), 0o600)
	os.Chmod(open, 0o644) // whatever the umask
	oidc := func(edit func(*process.SignInOptions)) process.SignInOptions {
		o := process.SignInOptions{OIDCIssuer: "https://idp.example", OIDCClientID: "jisr", OIDCSecretFile: closed,
			OIDCRedirectURL: "https://jisr.example/access-log/callback", OIDCEIDClaim: citizen.DefaultEIDClaim}
		if edit != nil {
			edit(&o)
		}
		return o
	}
	cases := []struct {
		name string
		addr string
		o    process.SignInOptions
		ok   bool
	}{
		{"production", "0.0.0.0:8443", oidc(nil), true},
		{"no sign-in at all", "0.0.0.0:8443", process.SignInOptions{}, true},
		{"demo login on loopback", "127.0.0.1:8080", process.SignInOptions{DemoLogin: true}, true},
		{"demo login off loopback", "0.0.0.0:8443", process.SignInOptions{DemoLogin: true}, false},
		{"secret file readable by others", "0.0.0.0:8443", oidc(func(o *process.SignInOptions) { o.OIDCSecretFile = open }), false},
		{"no secret", "0.0.0.0:8443", oidc(func(o *process.SignInOptions) { o.OIDCSecretFile = "" }), false},
		{"no client ID", "0.0.0.0:8443", oidc(func(o *process.SignInOptions) { o.OIDCClientID = "" }), false},
		{"plaintext issuer", "0.0.0.0:8443", oidc(func(o *process.SignInOptions) { o.OIDCIssuer = "http://idp.example" }), false},
		{"plaintext redirect off loopback", "0.0.0.0:8443", oidc(func(o *process.SignInOptions) { o.OIDCRedirectURL = "http://jisr.example/access-log/callback" }), false},
		{"no redirect off loopback", "0.0.0.0:8443", oidc(func(o *process.SignInOptions) { o.OIDCRedirectURL = "" }), false},
		{"redirect derived on loopback", "127.0.0.1:8080", oidc(func(o *process.SignInOptions) { o.OIDCRedirectURL = "" }), true},
	}
	t.Setenv("JISR_OIDC_CLIENT_SECRET", "")
	for _, tc := range cases {
		_, err := process.NewCitizenAuth(g, tc.addr, true, tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	t.Setenv("JISR_OIDC_CLIENT_SECRET", "from-the-environment")
	if _, err := process.NewCitizenAuth(g, "0.0.0.0:8443", true, oidc(func(o *process.SignInOptions) { o.OIDCSecretFile = "" })); err != nil {
		t.Errorf("secret from the environment: %v", err)
	}
	t.Setenv("JISR_CITIZEN_LOGIN", "demo")
	if _, err := (process.AuditFlags{}).Settings(); err == nil {
		t.Error("JISR_CITIZEN_LOGIN=demo accepted")
	}
}
