// Package browsertest drives a real headless Chromium (Debian's chromium
// package) with chromedp for jisr's browser tests (build tag browser):
// finding the browser, one tab per test with the language the test asks
// for, and screenshots written to a folder.
package browsertest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Candidates are the browser binaries looked for, in order, after
// $JISR_CHROMIUM.
var Candidates = []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// ErrNoBrowser: no Chromium was found.
var ErrNoBrowser = errors.New("browsertest: no Chromium found: install Debian's chromium package (.ci/run does) or set JISR_CHROMIUM")

// Find returns the path of the browser to run.
func Find() (string, error) {
	if p := os.Getenv("JISR_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, c := range Candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", ErrNoBrowser
}

// Options shape one browser tab.
type Options struct {
	// AcceptLanguage is sent with every request (e.g. "ar-MA,ar;q=0.9").
	AcceptLanguage string
	// Width and Height of the window (default 1280×900).
	Width, Height int
	// Timeout bounds the whole tab's life (default 3 minutes).
	Timeout time.Duration
}

// New starts a headless Chromium for t and returns a chromedp context for
// one tab; everything is closed when the test ends. A missing browser fails
// the test (it never skips).
func New(t testing.TB, o Options) context.Context {
	t.Helper()
	bin, err := Find()
	if err != nil {
		t.Fatal(err)
	}
	if o.Width == 0 {
		o.Width, o.Height = 1280, 900
	}
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.WindowSize(o.Width, o.Height),
		chromedp.NoSandbox, // CI runs as root in a container
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	if o.AcceptLanguage != "" {
		opts = append(opts, chromedp.Flag("lang", strings.SplitN(o.AcceptLanguage, ",", 2)[0]))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	ctx, cancelTimeout := context.WithTimeout(ctx, o.Timeout)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens the tab
		t.Fatalf("browsertest: starting %s: %v", bin, err)
	}
	if o.AcceptLanguage != "" {
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": o.AcceptLanguage}}); err != nil {
			t.Fatal(err)
		}
	}
	return ctx
}

// Dir is the screenshots folder: $JISR_SCREENSHOTS, else var/screenshots
// under the repository root (found from the working directory).
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("JISR_SCREENSHOTS"); d != "" {
		return d
	}
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return filepath.Join(d, "var", "screenshots")
		}
		if filepath.Dir(d) == d {
			return filepath.Join(os.TempDir(), "jisr-screenshots")
		}
	}
}

// Screenshot writes a full-page PNG of the tab as Dir/name.png and returns
// its path.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := Dir(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
