package consent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The gateway verifies with public keys only. The consent service, which
// alone holds the private keys, publishes them as a JSON Web Key Set file
// (JWKSPath, rewritten on every key change and by `jisr consent serve`);
// operators distribute it to gateway hosts like a trust bundle, and each
// gateway loads it (LoadJWKS) and reloads it when it changes (WatchJWKS).

// ErrPrivateKey is returned when key material meant for a gateway holds a
// private (or symmetric) key: a gateway refuses to start with it.
var ErrPrivateKey = errors.New("consent: the gateway's consent key file holds a private key; give it the public JWKS only")

// ErrJWKSWritable is returned for a public key file that its group or other
// users can write: the keys are public, but whoever can write the file can
// add a key and mint any consent.
var ErrJWKSWritable = errors.New("consent: the public key file is writable by group or other users (chmod 644 it)")

// JWKSPath is where the consent service writes its public JWKS under a
// certs directory (beside the SVIDs, not in the private key directory).
func JWKSPath(certsDir string) string { return filepath.Join(certsDir, "consent-jwks.json") }

// WriteJWKS writes the public keys of ks that still verify at now to path,
// atomically, readable by all (they are public).
func WriteJWKS(ks *KeySet, path string, now time.Time) error {
	b, err := json.MarshalIndent(ks.JWKS(now), "", "  ")
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, append(b, '\n')) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".jwks-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// hasPrivate reports whether a JWK has a member of private or symmetric
// keys (d, p, q, dp, dq, qi, oth, k), in any letter case.
func hasPrivate(jwk map[string]json.RawMessage) bool {
	for name := range jwk {
		switch strings.ToLower(name) {
		case "d", "p", "q", "dp", "dq", "qi", "oth", "k":
			return true
		}
	}
	return false
}

// privateAnywhere reports whether a private member name (hasPrivate) is a
// key of any object at any depth of the JSON document b, duplicates and
// members no JWKS defines included: a private key nested in a public JWK,
// in a second set beside "keys", or in a duplicate member that decoding
// would overwrite is still a private key in the gateway's configuration.
func privateAnywhere(b []byte) bool {
	found := false
	var value func(dec *json.Decoder, depth int) bool // false: stop (not JSON, too deep)
	value = func(dec *json.Decoder, depth int) bool {
		if depth > 32 {
			found = true // too deep to look through: refused as if it held one
			return false
		}
		t, err := dec.Token()
		if err != nil {
			return false
		}
		switch t {
		case json.Delim('{'):
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return false
				}
				if name, _ := kt.(string); hasPrivate(map[string]json.RawMessage{name: nil}) {
					found = true
				}
				if !value(dec, depth+1) {
					return false
				}
			}
			_, err = dec.Token()
			return err == nil
		case json.Delim('['):
			for dec.More() {
				if !value(dec, depth+1) {
					return false
				}
			}
			_, err = dec.Token()
			return err == nil
		}
		return true
	}
	value(json.NewDecoder(bytes.NewReader(b)), 0)
	return found
}

// ParseJWKS reads public Ed25519 keys from a JWKS. Every key must be
// kty OKP, crv Ed25519, with its kid the one jisr derives from it (RFC 7638
// thumbprint); a private key anywhere, or a PEM private key, is ErrPrivateKey.
func ParseJWKS(b []byte) (*KeySet, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if strings.Contains(blk.Type, "PRIVATE KEY") {
			return nil, ErrPrivateKey
		}
		return nil, fmt.Errorf("consent: the JWKS is a PEM %s, not a JSON Web Key Set", blk.Type)
	}
	var set struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("consent: the JWKS is not a JSON object: %w", err)
	}
	if privateAnywhere(b) {
		return nil, ErrPrivateKey
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("consent: the JWKS: %w", err)
	}
	ks := &KeySet{}
	for i, jwk := range set.Keys {
		if hasPrivate(jwk) {
			return nil, ErrPrivateKey
		}
		str := func(name string) string {
			var s string
			_ = json.Unmarshal(jwk[name], &s)
			return s
		}
		if str("kty") != "OKP" || str("crv") != "Ed25519" {
			return nil, fmt.Errorf("consent: JWKS key %d is not an Ed25519 (OKP) key", i)
		}
		if a := str("alg"); jwk["alg"] != nil && a != headerAlg {
			return nil, fmt.Errorf("consent: JWKS key %d has alg %q, not EdDSA", i, a)
		}
		if u := str("use"); jwk["use"] != nil && u != "sig" {
			return nil, fmt.Errorf("consent: JWKS key %d has use %q, not sig", i, u)
		}
		x, err := base64.RawURLEncoding.DecodeString(str("x"))
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("consent: JWKS key %d: x is not a base64url Ed25519 public key", i)
		}
		pub := ed25519.PublicKey(x)
		if id := str("kid"); id != kid(pub) {
			return nil, fmt.Errorf("consent: JWKS key %d: kid %q is not the key's thumbprint %q", i, id, kid(pub))
		}
		ks.keys = append(ks.keys, &Key{ID: kid(pub), Public: pub})
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("consent: the JWKS has no key")
	}
	return ks, nil
}

// LoadJWKS reads the public keys a gateway verifies with from path.
func LoadJWKS(path string) (*KeySet, error) {
	b, err := readJWKS(path)
	if errors.Is(err, ErrJWKSWritable) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("consent: public keys: %w (the consent service writes them; `jisr certs init` does too)", err)
	}
	ks, err := ParseJWKS(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ks, nil
}

// readJWKS reads a JWKS file that only its owner can write (the mode of
// the file a symlink points to).
func readJWKS(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, ErrJWKSWritable
	}
	return os.ReadFile(path)
}

// WatchJWKS reloads path into ks every interval until the returned stop is
// called, whenever the file's content changes: a key rotation reaches the
// gateway without a restart. A file that no longer loads, or now holds a
// private key, is logged and ignored: the keys in use stay.
func WatchJWKS(path string, ks *KeySet, every time.Duration, log *slog.Logger) (stop func()) {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	last, _ := os.ReadFile(path)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			b, err := readJWKS(path)
			if err != nil || bytes.Equal(b, last) {
				if err != nil {
					log.Error("consent public keys unreadable; keeping the keys in use", "path", path, "err", err)
				}
				continue
			}
			last = b
			next, err := ParseJWKS(b)
			if err != nil {
				log.Error("consent public keys changed but do not load; keeping the keys in use", "path", path, "err", err)
				continue
			}
			ks.replace(next.list())
			ids := make([]string, 0, len(next.list()))
			for _, k := range next.list() {
				ids = append(ids, k.ID)
			}
			log.Info("consent public keys reloaded", "path", path, "kids", ids)
		}
	}()
	return func() { cancel(); wg.Wait() }
}
