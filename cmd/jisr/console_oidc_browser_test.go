//go:build browser

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
)

// The console's OIDC sign-in in a real Chromium without any certificate
// (jisr dev --console-oidc): the demo provider's auditor, who has the role,
// signs in and reads the decisions; a demo citizen, who has not, is
// refused and sees nothing.
func TestConsoleOIDCInTheBrowser(t *testing.T) {
	f := startDevWith(t, nil, func(o *dev.Options) { o.ConsoleOIDC = true })
	console := f.demo.Endpoints["console"]
	if !strings.HasPrefix(console, "https://127.0.0.1:") {
		t.Fatalf("no console in demo.json: %v", f.demo.Endpoints)
	}
	base := strings.TrimSuffix(console, "/console/")
	page := func(t *testing.T, ctx context.Context) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Not signed in: the console says how to sign in, and shows nothing.
	auditor := browser(t, f.g, nil)
	if err := chromedp.Do(auditor, chromedp.Navigate(console)); err != nil {
		t.Fatalf("open the console without a certificate: %v", err)
	}
	if got := page(t, auditor); !strings.Contains(got, "sign in as an auditor") {
		t.Fatalf("before sign-in: %q", got)
	}
	// The demo auditor signs in through the demo provider and lands on the decisions.
	step, cancel := context.WithTimeout(auditor, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(step, chromedp.Navigate(base+"/console/login"),
		chromedp.Click(chromedp.CSS(`button[name=eid][value="`+dev.DemoAuditor+`"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS("header h1"))); err != nil {
		loc, _ := chromedp.Run(auditor, chromedp.Evaluate[string]("location.href"))
		var logs []string
		for _, l := range strings.Split(f.logs.String(), "\n") {
			if strings.Contains(l, "sign-in") {
				logs = append(logs, l)
			}
		}
		t.Fatalf("the auditor's sign-in: %v\nat %s:\n%s\n%s", err, loc, page(t, auditor), strings.Join(logs, "\n"))
	}
	if got := page(t, auditor); !strings.Contains(got, "Auditor's console") || !strings.Contains(got, "recorded in the audit log") {
		t.Fatalf("the signed-in auditor's console: %q", got)
	}
	if shots := os.Getenv("JISR_SCREENSHOTS"); shots != "" {
		if png, err := chromedp.Run(auditor, chromedp.FullScreenshot(100)); err == nil {
			_ = os.WriteFile(filepath.Join(shots, "console-9-oidc-auditor.png"), png, 0o644)
		}
	}
	// A demo citizen (no role) is refused, and the console stays closed to them.
	citizen := browser(t, f.g, nil)
	eid := f.demo.Citizens[0].EID
	if err := chromedp.Do(citizen, chromedp.Navigate(base+"/console/login"),
		chromedp.Click(chromedp.CSS(`button[name=eid][value="`+eid+`"]`), chromedp.NodeVisible)); err != nil {
		t.Fatalf("a citizen's sign-in: %v", err)
	}
	// The provider sends the browser back to the console's callback, which refuses.
	bustest.Eventually(t, 30*time.Second, func() error {
		got := page(t, citizen)
		return bustest.Check(strings.Contains(got, "sign-in failed"), "the callback's refusal, not "+got)
	})
	if err := chromedp.Do(citizen, chromedp.Navigate(console)); err != nil {
		t.Fatal(err)
	}
	if got := page(t, citizen); !strings.Contains(got, "sign in as an auditor") {
		t.Fatalf("a citizen after a refused sign-in: %q", got)
	}
}
