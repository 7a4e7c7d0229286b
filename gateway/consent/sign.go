package consent

import (
	"crypto"
	"encoding/json"
	"errors"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const cryptoSHA256 = crypto.SHA256

// Issuer mints tokens with the consent service's newest key.
type Issuer struct {
	keys *KeySet
	id   spiffeid.ID
	now  func() time.Time
}

// NewIssuer returns an issuer for the consent identity id.
func NewIssuer(keys *KeySet, id spiffeid.ID) *Issuer {
	return &Issuer{keys: keys, id: id, now: time.Now}
}

// Issue mints a token for r.
func (i *Issuer) Issue(r *Request) (string, *Claims, error) {
	c, err := r.Claims(i.id, i.now())
	if err != nil {
		return "", nil, err
	}
	tok, err := Sign(i.keys.Signing(), c)
	return tok, c, err
}

// Sign serialises claims as a compact JWS signed with k.
func Sign(k *Key, c *Claims) (string, error) {
	if k.Private == nil {
		return "", errors.New("consent: this key set has no private key")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: k.Private},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), k.ID))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Inspect decodes and verifies a token offline (for `jisr consent inspect`):
// it returns the claims, the kid, and what the verifier would say of its
// signature and times now.
func Inspect(keys *KeySet, token string, now time.Time) (*Claims, error) {
	c, err := parse(keys, token, now)
	if err != nil {
		return nil, err
	}
	if err := checkTimes(c, now); err != nil {
		return c, err
	}
	return c, nil
}

func checkTimes(c *Claims, now time.Time) error {
	const skew = 30 * time.Second
	if now.After(time.Unix(c.Expiry, 0).Add(skew)) {
		return refuse(ReasonExpired)
	}
	if now.Add(skew).Before(time.Unix(c.NotBefore, 0)) {
		return refuse(ReasonNotYetValid)
	}
	return nil
}
