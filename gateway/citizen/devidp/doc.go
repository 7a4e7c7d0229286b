// Package devidp is a small OpenID Provider for the demo citizens of
// `jisr dev` and the tests, built on zitadel/oidc's embeddable provider
// (pkg/op): discovery, JWKS, the authorization-code flow with PKCE (S256
// required here), nonce and acr, and a login page that lists the demo
// citizens. It stands in for the national e-ID platform so that the
// gateway's real relying party (package citizen) runs end to end on one
// machine.
//
// It serves plaintext HTTP on a loopback address only and has no passwords:
// it is never a production identity provider.
package devidp
