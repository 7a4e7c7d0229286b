//go:build browser

package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/certs/svid"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// The auditor's console in a real Chromium, authenticated the way an
// auditor's browser is: the auditor's client certificate (the dev CA's SVID
// for spiffe://jisr.internal/auditor) in the browser profile's NSS database,
// chosen for the console by the AutoSelectCertificateForUrls policy. The
// same browser with a member's certificate, and with none, is refused.
//
// Needs chromium, certutil and pk12util (libnss3-tools) and openssl, and
// root to write the managed policy (make test-console; .ci/run installs
// what is missing).
func TestConsoleInTheBrowser(t *testing.T) {
	for _, tool := range []string{"chromium", "certutil", "pk12util", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make test-console installs it): %v", tool, err)
		}
	}
	installPolicy(t)
	f := startDevWith(t, func(g *process.Env) { g.TraceMemory = 5000 })
	console := f.demo.Endpoints["console"]
	if !strings.HasPrefix(console, "https://127.0.0.1:") {
		t.Fatalf("no console in demo.json: %v", f.demo.Endpoints)
	}
	shots := os.Getenv("JISR_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "jisr-console-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)

	// Traffic: one allowed query with its token, and a probing burst from
	// cnss: 25 queries without a token, each refused CONSENT_REQUIRED.
	tok := f.getPersonToken(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	client := civilv1.NewCivilRegistryClient(f.dial(t, "cnss"))
	call := metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token))
	if _, err := client.GetPerson(call, &civilv1.GetPersonRequest{Eid: tok.Citizen}); err != nil {
		t.Fatal(err)
	}
	for range 25 {
		probe := metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", tok.Purpose))
		if _, err := client.GetPerson(probe, &civilv1.GetPersonRequest{Eid: tok.Citizen}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("a probe without a token: %v", err)
		}
	}

	fed, err := f.g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	auditorID := fed.ID("auditor")
	auditor := browser(t, f.g, &auditorID)
	shot := func(ctx context.Context, name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, "console-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	do := func(ctx context.Context, what string, a ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a...); err != nil {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
			t.Fatalf("%s: %v\npage:\n%s", what, err, body)
		}
	}
	eval := func(ctx context.Context, js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	base := strings.TrimSuffix(console, "/console/")

	// 1. Signed in by the certificate: the decisions table.
	do(auditor, "open the console", chromedp.Navigate(console), chromedp.WaitVisible(chromedp.ID("decisions")))
	if got := eval(auditor, "document.querySelector('header h1').textContent"); !strings.Contains(got, "Auditor's console") {
		t.Fatalf("console title %q", got)
	}
	shot(auditor, "1-decisions")
	// 2. Filter by the citizen: the eID goes in the form body, the page shows the ckey's decisions.
	do(auditor, "find the citizen", chromedp.SendKeys(chromedp.ID("eid"), tok.Citizen), chromedp.Click(chromedp.ID("find")),
		chromedp.WaitVisible(chromedp.ID("ckey-note")))
	rows, _ := strconv.Atoi(eval(auditor, "String(document.querySelectorAll('#decisions tbody tr').length)"))
	if loc := eval(auditor, "location.href"); rows < 26 || strings.Contains(strings.ToUpper(loc), tok.Citizen) {
		t.Fatalf("the citizen's decisions: %d rows at %s", rows, loc)
	}
	shot(auditor, "2-citizen")
	// 3. The allowed decision's trace: every hop, consumer adapter to provider backend.
	do(auditor, "open the trace", chromedp.Click(chromedp.CSS("#decisions tr.ok a.trace")), chromedp.WaitVisible(chromedp.ID("spans")))
	spans := eval(auditor, "Array.from(document.querySelectorAll('#spans tr.span')).map(e => e.cells[1].textContent + ' · ' + e.cells[0].textContent).join('\\n')")
	shot(auditor, "3-trace")
	// The consumer adapter sends, the gateway processes and forwards, the
	// provider adapter processes and calls its backend, which looks up.
	for _, hop := range []string{"send jisr.q", "process jisr.q", "gateway.consent.verify", "send jisr.p", "process jisr.p", "store.lookup", "gateway.audit.append"} {
		if !strings.Contains(spans, hop) {
			t.Errorf("the waterfall lacks %q:\n%s", hop, spans)
		}
	}
	if n := strings.Count(spans, "\n") + 1; n < 6 {
		t.Errorf("the waterfall has %d spans:\n%s", n, spans)
	}
	// 4. The probing burst is a finding with its evidence, linked to its decisions.
	do(auditor, "the findings", chromedp.Navigate(base+"/console/findings?lang=fr"), chromedp.WaitVisible(chromedp.CSS(`#findings tr[data-kind="probing"]`)))
	evidence := eval(auditor, `document.querySelector('#findings tr[data-kind="probing"] .evidence').textContent`)
	if !strings.Contains(evidence, "refusals CONSENT_REQUIRED by cnss") {
		t.Fatalf("probing evidence %q", evidence)
	}
	shot(auditor, "4-findings-fr")
	do(auditor, "the finding's decisions", chromedp.Click(chromedp.CSS(`#findings tr[data-kind="probing"] a.evidence-link`)), chromedp.WaitVisible(chromedp.ID("decisions")))
	if n := eval(auditor, "String(document.querySelectorAll('#decisions tbody tr.refused').length)"); n != "25" {
		t.Fatalf("%s refused decisions behind the finding, want 25", n)
	}
	shot(auditor, "5-evidence")
	// 5. Statistics in Arabic (right to left), and integrity verified on demand.
	do(auditor, "statistics", chromedp.Navigate(base+"/console/stats?lang=ar"), chromedp.WaitVisible(chromedp.CSS(".chart-box svg")))
	if got := eval(auditor, "document.documentElement.dir"); got != "rtl" {
		t.Errorf("the Arabic page's dir is %q", got)
	}
	shot(auditor, "6-stats-ar")
	// The background verification may already show a good result: the page
	// is marked before the click, and the answer to the form's post is a new
	// document without the mark (a screenshot taken while the post is still
	// loading can hang until the test's deadline).
	do(auditor, "verify", chromedp.Navigate(base+"/console/integrity"),
		chromedp.Evaluate[chromedp.Void]("window.jisrBeforeVerify = true"),
		chromedp.Click(chromedp.ID("verify")))
	// Evaluated again until the new document answers (while it loads, an
	// evaluation may fail: the old document's context is gone).
	bustest.Eventually(t, 45*time.Second, func() error {
		ok, err := chromedp.Run(auditor, chromedp.Evaluate[bool](`!window.jisrBeforeVerify && document.readyState === "complete" && !!document.querySelector("#verification .good")`))
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the on-demand verification's page is not shown yet")
		}
		return nil
	})
	shot(auditor, "7-integrity")

	// A member's certificate: the console answers 403, nothing of the records.
	cnss, err := fed.Member("cnss")
	if err != nil {
		t.Fatal(err)
	}
	member := browser(t, f.g, &cnss.ID)
	do(member, "a member opens the console", chromedp.Navigate(console))
	if text := eval(member, "document.body.innerText"); !strings.Contains(text, "only the auditor") || strings.Contains(text, "CONSENT_REQUIRED") {
		t.Fatalf("a member's browser saw %q", text)
	}
	shot(member, "8-member-refused")
	// No certificate: the TLS handshake fails, no page at all.
	none := browser(t, f.g, nil)
	if err := chromedp.Do(none, chromedp.Navigate(console)); err == nil || !strings.Contains(err.Error(), "ERR_") {
		t.Fatalf("a browser without a certificate: %v\n%s", err, eval(none, "document.body.innerText"))
	}
}

// policyFile makes Chromium present the profile's client certificate to
// the loopback console without asking.
const policyFile = "/etc/chromium/policies/managed/jisr-console-test.json"

func installPolicy(t *testing.T) {
	t.Helper()
	pattern, _ := json.Marshal(map[string]any{"pattern": "https://127.0.0.1:*", "filter": map[string]any{}})
	b, _ := json.Marshal(map[string]any{"AutoSelectCertificateForUrls": []string{string(pattern)}})
	if err := os.MkdirAll(filepath.Dir(policyFile), 0o755); err != nil {
		t.Fatalf("the Chromium policy (root needed): %v", err)
	}
	if err := os.WriteFile(policyFile, b, 0o644); err != nil {
		t.Fatalf("the Chromium policy (root needed): %v", err)
	}
	t.Cleanup(func() { os.Remove(policyFile) })
}

// browser starts a headless Chromium whose NSS database holds the SVID of
// id ("" for none), in a profile of its own.
func browser(t *testing.T, g *process.Env, id *spiffeid.ID) context.Context {
	t.Helper()
	home := t.TempDir()
	db := "sql:" + filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(filepath.Join(home, ".pki", "nssdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	sh(t, "certutil", "-N", "-d", db, "--empty-password")
	if id != nil {
		cert, key := svid.Paths(g.CertsDir, *id)
		p12 := filepath.Join(home, "id.p12")
		sh(t, "openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-out", p12, "-passout", "pass:", "-name", "jisr")
		sh(t, "pk12util", "-i", p12, "-d", db, "-W", "")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.NoSandbox, // CI runs as root in a container
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(home, "profile")),
		chromedp.Flag("ignore-certificate-errors", true), // the gateway's SVID names no host: the console checks the client, the test the page
		chromedp.Env("HOME="+home),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return ctx
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
