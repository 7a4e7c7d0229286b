// Package citizen signs citizens in to the gateway's HTTP side (their access
// log, their consents) and keeps their sessions.
//
// Production: the gateway is an OpenID Connect relying party of the national
// e-ID platform — authorization-code flow with PKCE (S256), state bound to
// the browser by a cookie, nonce, and the acr (CNIE level of assurance)
// requested and checked. The eID comes from one configured claim of the
// verified ID token, never from a form field; the gateway keeps only the
// citizen key derived from it.
//
// Development: `jisr dev` may also turn on a demo login by eID alone
// (DemoLogin), on a loopback address only, and runs package devidp as the
// provider so that the real flow runs on one machine.
//
// Sessions are server-side: a random 256-bit ID held by the citizen (cookie,
// or bearer for API clients), of which the server keeps only the SHA-256;
// rotated at login, destroyed at logout, with idle and absolute expiry. A
// sign-in in progress (state, nonce, PKCE verifier) travels sealed in a
// short-lived cookie, so anonymous requests cannot fill the server's memory.
// State-changing requests are refused cross-origin (Sec-Fetch-Site, Origin),
// and a state change authenticated by the cookie needs a browser's proof of
// origin (Origin or Sec-Fetch-Site: same-origin).
package citizen
