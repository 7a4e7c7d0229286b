package process

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jisr-bus/jisr/bus/loopback"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/console"
	"github.com/jisr-bus/jisr/gateway/node"
)

// ConsoleSignInOptions: a human signs in to the auditor's console by
// OpenID Connect when the ID token's RoleClaim (a JSON array) holds Role.
// Without Issuer the console takes the auditor's client certificate only.
type ConsoleSignInOptions struct {
	Issuer      string
	ClientID    string
	SecretFile  string // else $JISR_CONSOLE_OIDC_CLIENT_SECRET
	RedirectURL string // default https://<console>/console/callback, loopback only
	RoleClaim   string // default "roles"
	Role        string // default "auditor"
	ACR         []string

	// ClientSecret and AllowRedirect are set by jisr dev for its embedded provider.
	ClientSecret  string
	AllowRedirect func(redirectURL string)
}

// Defaults of the console's sign-in.
const (
	DefaultConsoleRoleClaim = "roles"
	DefaultConsoleRole      = "auditor"
)

func (o ConsoleSignInOptions) secret() (string, error) {
	if o.ClientSecret != "" {
		return o.ClientSecret, nil
	}
	if o.SecretFile == "" {
		return os.Getenv("JISR_CONSOLE_OIDC_CLIENT_SECRET"), nil
	}
	fi, err := os.Stat(o.SecretFile)
	if err != nil {
		return "", fmt.Errorf("--console-oidc-client-secret-file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", UsageError{fmt.Errorf("--console-oidc-client-secret-file %s: %w", o.SecretFile, ErrSecretFileOpen)}
	}
	b, err := os.ReadFile(o.SecretFile)
	if err != nil {
		return "", fmt.Errorf("--console-oidc-client-secret-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// consoleSignInOption is the node option of the console's OIDC sign-in
// (nil without an issuer).
func consoleSignInOption(g *Env, o ConsoleSignInOptions) (node.Option, error) {
	if o.Issuer == "" {
		return nil, nil
	}
	if o.ClientID == "" {
		return nil, UsageError{errors.New("--console-oidc-client-id is required with --console-oidc-issuer")}
	}
	if _, err := o.secret(); err != nil {
		return nil, err
	}
	return node.WithConsoleSignIn(func(addr string) (*citizen.Auth, error) { return NewConsoleAuth(g, addr, o) }), nil
}

// NewConsoleAuth is the console's OIDC sign-in for a console listening on
// addr: gateway/citizen's relying party, sessions and CSRF protection,
// configured for the auditor's role (console.IdentifyByRole).
func NewConsoleAuth(g *Env, addr string, o ConsoleSignInOptions) (*citizen.Auth, error) {
	if o.ClientID == "" {
		return nil, UsageError{errors.New("--console-oidc-client-id is required with --console-oidc-issuer")}
	}
	secret, err := o.secret()
	if err != nil {
		return nil, err
	}
	if o.RoleClaim == "" {
		o.RoleClaim = DefaultConsoleRoleClaim
	}
	if o.Role == "" {
		o.Role = DefaultConsoleRole
	}
	redirect := o.RedirectURL
	if redirect == "" {
		if !loopback.Is(addr) {
			return nil, UsageError{errors.New("--console-oidc-redirect-url is required off loopback")}
		}
		redirect = "https://" + addr + console.PathCallback
	}
	if o.AllowRedirect != nil {
		o.AllowRedirect(redirect)
	}
	a, err := citizen.New(citizen.Config{
		OIDC: &citizen.OIDC{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: secret, RedirectURL: redirect, ACR: o.ACR},
		// The console is HTTPS only: Secure, __Host- cookies of its own.
		Secure: true, CookiePrefix: "jisr_console", Log: g.Log.With("component", "console-sign-in"),
		Identify: console.IdentifyByRole(o.RoleClaim, o.Role),
		Paths: citizen.Paths{Login: console.PathLogin, Callback: console.PathCallback, Logout: console.PathLogout,
			Session: console.PathSession, After: "/console/"},
	})
	if err != nil {
		return nil, UsageError{err}
	}
	g.Log.Info("console sign-in through OpenID Connect", "issuer", o.Issuer, "role_claim", o.RoleClaim, "role", o.Role, "redirect", redirect)
	return a, nil
}
