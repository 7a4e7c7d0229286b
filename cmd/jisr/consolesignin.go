package main

import (
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/console"
)

// consoleSignInFlags: the console's OIDC sign-in with a role (docs/console.md).
func consoleSignInFlags(cmd *cobra.Command, o *process.ConsoleSignInOptions) {
	f := cmd.Flags()
	f.StringVar(&o.Issuer, "console-oidc-issuer", "", "OpenID Connect issuer whose users with --console-role may sign in to the console (besides the auditor's certificate); empty: the certificate only")
	f.StringVar(&o.ClientID, "console-oidc-client-id", "", "the console's client ID at that issuer")
	f.StringVar(&o.SecretFile, "console-oidc-client-secret-file", "", "file holding the console's client secret (else $JISR_CONSOLE_OIDC_CLIENT_SECRET)")
	f.StringVar(&o.RedirectURL, "console-oidc-redirect-url", "", "redirect URL registered at the issuer, https://<console>"+console.PathCallback+" (default: from --console on loopback)")
	f.StringVar(&o.RoleClaim, "console-role-claim", process.DefaultConsoleRoleClaim, "ID token claim (a top-level JSON array of strings) that carries the user's roles")
	f.StringVar(&o.Role, "console-role", process.DefaultConsoleRole, "the role in --console-role-claim that admits a user to the console")
	f.StringSliceVar(&o.ACR, "console-oidc-acr", nil, "accepted acr values of the console's sign-in (default: not checked)")
}
