package main

import (
	"github.com/spf13/cobra"

	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/citizen"
)

func signinFlags(cmd *cobra.Command, o *process.SignInOptions) {
	f := cmd.Flags()
	f.StringVar(&o.HTTPCert, "http-cert", "", "PEM certificate chain for HTTPS to citizens' browsers (off loopback; without it the gateway's SVID, mTLS)")
	f.StringVar(&o.HTTPKey, "http-key", "", "PEM private key of --http-cert")
	f.StringVar(&o.OIDCIssuer, "oidc-issuer", "", "OpenID Connect issuer of the national e-ID platform (citizen sign-in); empty: no sign-in")
	f.StringVar(&o.OIDCClientID, "oidc-client-id", "", "this gateway's client ID at the e-ID platform")
	f.StringVar(&o.OIDCSecretFile, "oidc-client-secret-file", "", "file holding the client secret (else $JISR_OIDC_CLIENT_SECRET)")
	f.StringVar(&o.OIDCRedirectURL, "oidc-redirect-url", "", "redirect URL registered at the platform, https://<gateway>"+citizen.PathCallback+" (default: from --http on loopback)")
	f.StringVar(&o.OIDCEIDClaim, "oidc-eid-claim", citizen.DefaultEIDClaim, "ID token claim that carries the citizen's eID (CNIE number)")
	f.StringSliceVar(&o.OIDCACR, "oidc-acr", []string{citizen.DefaultACR}, "accepted acr values (CNIE level of assurance), requested as acr_values")
	f.DurationVar(&o.SessionIdle, "session-idle", citizen.DefaultIdleTimeout, "a citizen's session ends after this long without a request")
	f.DurationVar(&o.SessionMaxAge, "session-max-age", citizen.DefaultMaxAge, "a citizen's session ends this long after sign-in")
	f.StringSliceVar(&o.Agents, "counter-agent", nil, "eID of a counter agent (repeatable): their sign-in serves nothing until the citizen signs in on it; every action then names the agent")
}
