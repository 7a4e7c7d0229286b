package consent

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Keys on disk: <certs>/consent/<created-unix>-<kid>.key, PKCS#8 PEM. The
// newest key signs; an older key keeps verifying until MaxTTL after the key
// that replaced it was created, when no token it signed can still be valid.

// ErrNoKey is returned when the consent key directory holds no key.
var ErrNoKey = errors.New("consent: no signing key (run `jisr certs init`)")

// ErrKeyPermissions is returned for a private key file that its group or
// other users may read or write: it is refused, not loaded.
var ErrKeyPermissions = errors.New("consent: a signing key file is open to group or other users")

// KeyDir is where the consent keys live under a certs directory.
func KeyDir(certsDir string) string { return filepath.Join(certsDir, "consent") }

// Key is one Ed25519 key of the consent service.
type Key struct {
	ID      string
	Created time.Time
	Private ed25519.PrivateKey // nil for a verify-only key
	Public  ed25519.PublicKey
	// Until is when this key stops verifying (zero: it is the newest).
	Until time.Time
}

// KeySet is the consent service's keys, newest last. A gateway's set holds
// public keys only and is replaced in place when the JWKS it was loaded from
// changes (WatchJWKS); gen counts the replacements.
type KeySet struct {
	mu   sync.RWMutex
	keys []*Key
	gen  atomic.Uint64
}

// list returns the keys (the slice is never modified once set).
func (ks *KeySet) list() []*Key {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.keys
}

// replace swaps in another set's keys.
func (ks *KeySet) replace(keys []*Key) {
	ks.mu.Lock()
	ks.keys = keys
	ks.mu.Unlock()
	ks.gen.Add(1)
}

// InitKeys creates the first signing key if there is none, and writes the
// public JWKS (JWKSPath) that gateways load.
func InitKeys(certsDir string) error {
	ks, err := LoadKeys(certsDir)
	if err == nil && len(ks.keys) > 0 {
		return WriteJWKS(ks, JWKSPath(certsDir), time.Now())
	}
	if err != nil && !errors.Is(err, ErrNoKey) {
		return err
	}
	_, err = RotateKey(certsDir, time.Now())
	return err
}

// RotateKey adds a new signing key; the previous ones keep verifying.
func RotateKey(certsDir string, now time.Time) (*Key, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k := &Key{ID: kid(pub), Created: now.UTC(), Private: priv, Public: pub}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	dir := KeyDir(certsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	name := filepath.Join(dir, fmt.Sprintf("%d-%s.key", k.Created.Unix(), k.ID))
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	ks, err := LoadKeys(certsDir)
	if err != nil {
		return nil, err
	}
	return k, WriteJWKS(ks, JWKSPath(certsDir), now)
}

// kid is the RFC 7638 thumbprint of the public key, shortened.
func kid(pub ed25519.PublicKey) string {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(cryptoSHA256)
	if err != nil {
		panic(err) // an Ed25519 public key always has a thumbprint
	}
	return base64.RawURLEncoding.EncodeToString(tp)[:16]
}

// LoadKeys reads every key of the consent service.
func LoadKeys(certsDir string) (*KeySet, error) {
	dir := KeyDir(certsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoKey
	}
	if err != nil {
		return nil, err
	}
	ks := &KeySet{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok {
			continue
		}
		created, id, ok := strings.Cut(name, "-")
		secs, err := strconv.ParseInt(created, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("consent: %s: not a key file name (<unix time>-<kid>.key)", e.Name())
		}
		path := filepath.Join(dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%w: %s is mode %04o (chmod 600 it)", ErrKeyPermissions, path, fi.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("consent: %s: not PEM", e.Name())
		}
		raw, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("consent: %s: %w", e.Name(), err)
		}
		priv, ok := raw.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("consent: %s: not an Ed25519 key", e.Name())
		}
		pub := priv.Public().(ed25519.PublicKey)
		if kid(pub) != id {
			return nil, fmt.Errorf("consent: %s: the file name's kid does not match the key", e.Name())
		}
		ks.keys = append(ks.keys, &Key{ID: id, Created: time.Unix(secs, 0).UTC(), Private: priv, Public: pub})
	}
	if len(ks.keys) == 0 {
		return nil, ErrNoKey
	}
	slices.SortFunc(ks.keys, func(a, b *Key) int { return a.Created.Compare(b.Created) })
	for i := 0; i < len(ks.keys)-1; i++ {
		ks.keys[i].Until = ks.keys[i+1].Created.Add(MaxTTL)
	}
	return ks, nil
}

// Signing is the newest key.
func (ks *KeySet) Signing() *Key {
	keys := ks.list()
	return keys[len(keys)-1]
}

// Verifying returns the key with this kid if it still verifies at now.
func (ks *KeySet) Verifying(kid string, now time.Time) (*Key, bool) {
	for _, k := range ks.list() {
		if k.ID == kid {
			return k, k.Until.IsZero() || now.Before(k.Until)
		}
	}
	return nil, false
}

// JWKS returns the public keys that still verify, as a JSON Web Key Set.
func (ks *KeySet) JWKS(now time.Time) jose.JSONWebKeySet {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range ks.list() {
		if !k.Until.IsZero() && !now.Before(k.Until) {
			continue
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public, KeyID: k.ID, Algorithm: string(jose.EdDSA), Use: "sig"})
	}
	return set
}

// PublicOnly returns a copy of the set without private keys (what a gateway needs).
func (ks *KeySet) PublicOnly() *KeySet {
	out := &KeySet{}
	for _, k := range ks.list() {
		c := *k
		c.Private = nil
		out.keys = append(out.keys, &c)
	}
	return out
}
