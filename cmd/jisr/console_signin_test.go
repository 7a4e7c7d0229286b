package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/process"
)

// The console's OIDC sign-in options: a client ID, a secret closed to
// others, an https issuer, a redirect URL off loopback.
func TestConsoleSignInOptions(t *testing.T) {
	dir := t.TempDir()
	g := &process.Env{FederationPath: "../testdata/federation.yaml", CertsDir: filepath.Join(dir, "certs"), DataDir: dir, Log: bustest.Logger(t)}
	open, closed := filepath.Join(dir, "open"), filepath.Join(dir, "closed")
	os.WriteFile(open, []byte("s3cret\n"), 0o644)
	os.WriteFile(closed, []byte("s3cret\n"), 0o600)
	os.Chmod(open, 0o644)
	t.Setenv("JISR_CONSOLE_OIDC_CLIENT_SECRET", "")
	opts := func(edit func(*process.ConsoleSignInOptions)) process.ConsoleSignInOptions {
		o := process.ConsoleSignInOptions{Issuer: "https://idp.example", ClientID: "jisr-console", SecretFile: closed,
			RedirectURL: "https://console.example:8443/console/callback"}
		if edit != nil {
			edit(&o)
		}
		return o
	}
	for _, tc := range []struct {
		name string
		addr string
		o    process.ConsoleSignInOptions
		ok   bool
	}{
		{"production", "0.0.0.0:8443", opts(nil), true},
		{"redirect derived on loopback", "127.0.0.1:8443", opts(func(o *process.ConsoleSignInOptions) { o.RedirectURL = "" }), true},
		{"no redirect off loopback", "0.0.0.0:8443", opts(func(o *process.ConsoleSignInOptions) { o.RedirectURL = "" }), false},
		{"the citizens' callback", "0.0.0.0:8443", opts(func(o *process.ConsoleSignInOptions) { o.RedirectURL = "https://console.example/access-log/callback" }), false},
		{"no client ID", "0.0.0.0:8443", opts(func(o *process.ConsoleSignInOptions) { o.ClientID = "" }), false},
		{"secret file readable by others", "0.0.0.0:8443", opts(func(o *process.ConsoleSignInOptions) { o.SecretFile = open }), false},
		{"no secret", "0.0.0.0:8443", opts(func(o *process.ConsoleSignInOptions) { o.SecretFile = "" }), false},
		{"plaintext issuer", "0.0.0.0:8443", opts(func(o *process.ConsoleSignInOptions) { o.Issuer = "http://idp.example" }), false},
	} {
		a, err := process.NewConsoleAuth(g, tc.addr, tc.o)
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && !errors.As(err, new(process.UsageError)) {
			t.Errorf("%s: %v is not a usage error", tc.name, err)
		}
		if a != nil && a.CookieName() != "__Host-jisr_console_session" {
			t.Errorf("%s: cookie %q", tc.name, a.CookieName())
		}
	}
}
