package consent

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// One reading of a token, and only one (docs/consent-tokens.md, "Accepted
// form"). The token is split and checked here, by hand, before anything is
// trusted: another JOSE library must never read a different token than jisr
// does, and the same claims must have exactly one token string.
//
//   - exactly three parts, each canonical base64url without padding
//     (decoding then re-encoding gives the same string);
//   - a protected header that is a JSON object of strings with exactly the
//     members alg ("EdDSA"), kid and typ ("JWT"), no key twice; b64, crit,
//     jwk, jku, x5u, x5c, x5t, x5t#S256, cty, zip and enc are refused by name,
//     any other member as unknown;
//   - an Ed25519 signature by a key of the consent service that still
//     verifies;
//   - claims that are one JSON object of the known claim names, spelled
//     exactly (no case folding), none twice at any depth, no null;
//   - a jti of the ID grammar (CheckID), nbf <= exp, exp-nbf and exp-iat at
//     most MaxTTL, and iat at most MaxClockSkew ahead of now.

// MaxTokenSize bounds a token's length in bytes.
const MaxTokenSize = 8 << 10

// MaxClockSkew is how far in the future a token's iat may be (the minting
// host's clock may run ahead of the gateway's).
const MaxClockSkew = 60 * time.Second

const (
	headerAlg = "EdDSA"
	headerTyp = "JWT"
)

// forbiddenHeader are the JOSE header members that would change how the
// token is read (b64, crit, zip, cty, enc) or where its key comes from
// (jwk, jku, x5*): refused by name.
var forbiddenHeader = map[string]bool{
	"b64": true, "crit": true, "jwk": true, "jku": true, "x5u": true, "x5c": true,
	"x5t": true, "x5t#S256": true, "cty": true, "zip": true, "enc": true,
}

var allowedHeader = map[string]bool{"alg": true, "kid": true, "typ": true}

// claimNames are the claims a token may carry, spelled exactly; required
// are the ones it must carry.
var (
	claimNames = map[string]bool{
		"iss": true, "sub": true, "aud": true, "iat": true, "nbf": true, "exp": true, "jti": true,
		"purpose": true, "legal_basis": true, "authorization_details": true, "max_uses": true,
	}
	requiredClaims = []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "purpose", "legal_basis", "authorization_details"}
	detailNames    = map[string]bool{"type": true, "service": true, "methods": true, "fields": true}
)

// maxJSONDepth bounds nesting in the header and the claims (the deepest
// claim, authorization_details[].methods[], is at depth 3).
const maxJSONDepth = 4

// parse reads a token the one strict way and checks its signature. It
// returns its claims; it does not check expiry, audience, scope or issuer.
func parse(keys *KeySet, token string, now time.Time) (*Claims, error) {
	if len(token) > MaxTokenSize {
		return nil, refuse(ReasonMalformed)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, refuse(ReasonMalformed)
	}
	var raw [3][]byte
	for i, p := range parts {
		b, ok := canonicalB64(p)
		if !ok {
			return nil, refuse(ReasonBadEncoding)
		}
		raw[i] = b
	}
	kid, reason := readHeader(raw[0])
	if reason != "" {
		return nil, refuse(reason)
	}
	k, ok := keys.Verifying(kid, now)
	if !ok {
		return nil, refuse(ReasonUnknownKey)
	}
	if len(raw[2]) != ed25519.SignatureSize || !ed25519.Verify(k.Public, []byte(parts[0]+"."+parts[1]), raw[2]) {
		return nil, refuse(ReasonBadSignature)
	}
	c, reason := readClaims(raw[1])
	if reason != "" {
		return nil, refuse(reason)
	}
	if reason := checkPeriod(c, now); reason != "" {
		return nil, refuse(reason)
	}
	return c, nil
}

// canonicalB64 decodes s as unpadded base64url and reports whether s is the
// one encoding of what it decodes to: no padding, no other character, no
// whitespace, no stray bits in the last character, not empty.
func canonicalB64(s string) ([]byte, bool) {
	if s == "" {
		return nil, false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != s {
		return nil, false
	}
	return b, true
}

// readHeader checks the protected header and returns its kid, or the reason
// it is refused.
func readHeader(b []byte) (kid, reason string) {
	if !utf8.Valid(b) {
		return "", ReasonBadHeader
	}
	members := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", ReasonBadHeader
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", ReasonBadHeader
		}
		name := t.(string) // object keys are always strings
		if _, dup := members[name]; dup {
			return "", ReasonDuplicateKey
		}
		if forbiddenHeader[name] {
			return "", ReasonHeaderForbidden
		}
		if !allowedHeader[name] {
			return "", ReasonHeaderUnknown
		}
		v, err := dec.Token()
		s, isString := v.(string)
		if err != nil || !isString {
			return "", ReasonBadHeader
		}
		members[name] = s
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return "", ReasonBadHeader
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", ReasonBadHeader
	}
	switch {
	case members["alg"] != headerAlg:
		return "", ReasonBadAlgorithm
	case members["typ"] != headerTyp:
		return "", ReasonWrongType
	case members["kid"] == "":
		return "", ReasonUnknownKey
	}
	return members["kid"], ""
}

// readClaims decodes the claims strictly and returns them, or the reason
// they are refused.
func readClaims(b []byte) (*Claims, string) {
	if !utf8.Valid(b) {
		return nil, ReasonMalformed
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	present := map[string]bool{}
	if reason := walk(dec, "", 0, present); reason != "" {
		return nil, reason
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, ReasonMalformed // trailing data after the object
	}
	for _, name := range requiredClaims {
		if !present[name] {
			return nil, ReasonBadClaim
		}
	}
	// Every key is now one of the known names spelled exactly, so the
	// case-insensitive matching of encoding/json cannot pick another one.
	var c Claims
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, ReasonBadClaim
	}
	switch {
	case c.Issuer == "" || c.Subject == "" || c.Audience == "" || c.Purpose == "" || c.LegalBasis == "":
		return nil, ReasonBadClaim
	case c.IssuedAt < 0 || c.NotBefore < 0 || c.Expiry <= 0 || c.MaxUses < 0:
		return nil, ReasonBadClaim
	case len(c.AuthorizationDetails) == 0:
		return nil, ReasonBadClaim
	}
	for _, d := range c.AuthorizationDetails {
		if d.Type == "" || d.Service == "" || len(d.Methods) == 0 {
			return nil, ReasonBadClaim
		}
	}
	if !CheckID(c.ID) {
		return nil, ReasonBadID
	}
	return &c, ""
}

// walk reads one JSON value from dec, refusing duplicate keys and null at
// every depth, and names outside claimNames (at the top) and detailNames
// (in authorization_details entries). path names where the value sits:
// "" the claims object, "d" an authorization_details entry, "-" elsewhere.
func walk(dec *json.Decoder, path string, depth int, present map[string]bool) string {
	if depth > maxJSONDepth {
		return ReasonBadClaim
	}
	t, err := dec.Token()
	if err != nil {
		return ReasonMalformed
	}
	if depth == 0 && t != json.Delim('{') {
		return ReasonMalformed // the claims are one object
	}
	switch t {
	case nil:
		return ReasonBadClaim
	case json.Delim('['):
		elem := "-"
		if path == "authorization_details" {
			elem = "d"
		}
		for dec.More() {
			if reason := walk(dec, elem, depth+1, nil); reason != "" {
				return reason
			}
		}
		if _, err := dec.Token(); err != nil {
			return ReasonMalformed
		}
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return ReasonMalformed
			}
			name := kt.(string)
			if seen[name] {
				return ReasonDuplicateKey
			}
			seen[name] = true
			switch {
			case depth == 0 && !claimNames[name], path == "d" && !detailNames[name]:
				return ReasonUnknownClaim
			}
			child := "-"
			if depth == 0 {
				child = name
				present[name] = true
			}
			if reason := walk(dec, child, depth+1, nil); reason != "" {
				return reason
			}
		}
		if _, err := dec.Token(); err != nil {
			return ReasonMalformed
		}
	}
	return ""
}

// checkPeriod bounds a token's validity: nbf <= exp, at most MaxTTL long
// counted from nbf and from iat, and iat not ahead of now by more than
// MaxClockSkew. The times are non-negative here, so no difference overflows.
func checkPeriod(c *Claims, now time.Time) string {
	maxTTL := int64(MaxTTL / time.Second)
	switch {
	case c.NotBefore > c.Expiry:
		return ReasonBadPeriod
	case c.Expiry-c.NotBefore > maxTTL, c.Expiry-c.IssuedAt > maxTTL:
		return ReasonLifetimeTooLong
	case c.IssuedAt > now.Add(MaxClockSkew).Unix():
		return ReasonIssuedInFuture
	}
	return ""
}
