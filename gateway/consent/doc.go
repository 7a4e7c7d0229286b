// Package consent issues and verifies jisr consent tokens: JWS compact
// serialisation signed with EdDSA (Ed25519) by the consent service, carrying
// standard JWT claims and RFC 9396 authorization_details, so that any JOSE
// library can verify (or, given the key, mint) them.
//
// Invariant: a token allows a query only if every check passes, in a fixed
// order, each failure with its own reason — and the verifier never logs or
// echoes the token or the citizen it names (sub is a ckey, never an eID).
package consent
