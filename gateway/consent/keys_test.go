package consent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// A signing key file that its group or other users can read (or write) is
// refused at load, not used.
func TestKeyFilesOpenToOthersAreRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := consent.InitKeys(dir); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(consent.KeyDir(dir), "*.key"))
	if len(files) != 1 {
		t.Fatalf("%d key files", len(files))
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o602} {
		if err := os.Chmod(files[0], mode); err != nil {
			t.Fatal(err)
		}
		if _, err := consent.LoadKeys(dir); !errors.Is(err, consent.ErrKeyPermissions) {
			t.Errorf("mode %04o: %v, want ErrKeyPermissions", mode, err)
		}
	}
	os.Chmod(files[0], 0o600)
	if _, err := consent.LoadKeys(dir); err != nil {
		t.Fatalf("mode 0600: %v", err)
	}
	// Attack (phase 2): the key file is a symlink (mode 0777 itself) to a
	// copy that others can read: the copy's mode is what counts.
	open := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(open, []byte(mustRead(t, files[0])), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(files[0])
	if err := os.Symlink(open, files[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := consent.LoadKeys(dir); !errors.Is(err, consent.ErrKeyPermissions) {
		t.Errorf("a symlink to a key file of mode 0644: %v, want ErrKeyPermissions", err)
	}
}

// The gateway's key material is public keys only: a JWKS with a private
// member, a lone private JWK, or the PEM signing key itself is refused.
func TestGatewayKeyMaterialIsPublicOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := consent.InitKeys(dir); err != nil {
		t.Fatal(err)
	}
	keys, err := consent.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := consent.LoadJWKS(consent.JWKSPath(dir))
	if err != nil {
		t.Fatalf("the JWKS certs init writes: %v", err)
	}
	if _, ok := pub.Verifying(keys.Signing().ID, time.Now()); !ok || pub.Signing().Private != nil {
		t.Fatal("the public set does not hold the public signing key, or holds a private one")
	}
	if fi, _ := os.Stat(consent.JWKSPath(dir)); strings.Contains(mustRead(t, consent.JWKSPath(dir)), `"d"`) || fi.Mode().Perm() != 0o644 {
		t.Fatalf("the JWKS file (mode %v) holds a private key", fi.Mode())
	}
	k := keys.Signing()
	privJWK, _ := json.Marshal(jose.JSONWebKey{Key: k.Private, KeyID: k.ID, Algorithm: "EdDSA", Use: "sig"})
	privSet, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.Private, KeyID: k.ID, Algorithm: "EdDSA"}}})
	pemFile, _ := filepath.Glob(filepath.Join(consent.KeyDir(dir), "*.key"))
	for name, b := range map[string][]byte{
		"JWKS with the private key":    privSet,
		"a lone private JWK":           privJWK,
		"the PEM signing key":          []byte(mustRead(t, pemFile[0])),
		"a symmetric key in the set":   []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"x"}]}`),
		"a private member in capitals": []byte(strings.Replace(string(privSet), `"d":`, `"D":`, 1)),
	} {
		if _, err := consent.ParseJWKS(b); !errors.Is(err, consent.ErrPrivateKey) {
			t.Errorf("%s: %v, want ErrPrivateKey", name, err)
		}
	}
	other, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.Public, KeyID: "not-its-thumbprint"}}})
	if _, err := consent.ParseJWKS(other); err == nil {
		t.Error("a key whose kid is not its thumbprint was loaded")
	}
	if _, err := consent.ParseJWKS([]byte(`{"keys":[]}`)); err == nil {
		t.Error("an empty JWKS was loaded")
	}
}

// A key rotation reaches a gateway's verifier without a restart, and a key
// withdrawn from the JWKS stops verifying at once, even for tokens the
// verifier had cached.
func TestJWKSChangesReachTheVerifier(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := consent.InitKeys(dir); err != nil {
		t.Fatal(err)
	}
	iss := spiffeid.RequireFromString("spiffe://jisr.internal/consent")
	aud := spiffeid.RequireFromString("spiffe://jisr.internal/member/cnss")
	req := &consent.Request{CKey: "CK", Audience: aud, Service: svc, Methods: []string{"GetPerson"}, Purpose: purpose, LegalBasis: "consent", TTL: time.Hour}
	ks1, _ := consent.LoadKeys(dir)
	old, _, err := consent.NewIssuer(ks1, iss).Issue(req)
	if err != nil {
		t.Fatal(err)
	}

	path := consent.JWKSPath(dir)
	pub, err := consent.LoadJWKS(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	stop := consent.WatchJWKS(path, pub, 5*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	defer stop()
	v, err := consent.NewVerifier(consent.VerifierConfig{Keys: pub, Issuer: iss})
	if err != nil {
		t.Fatal(err)
	}
	query := func(tok string) error {
		_, err := v.Verify(context.Background(), &decision.Request{ConsumerID: aud, CKey: "CK", Service: svc, Method: "GetPerson", Purpose: purpose, Token: tok})
		return err
	}
	if err := query(old); err != nil {
		t.Fatal(err)
	}

	newKey, err := consent.RotateKey(dir, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ks2, _ := consent.LoadKeys(dir)
	fresh, _, _ := consent.NewIssuer(ks2, iss).Issue(req)
	waitFor(t, "the rotated key to verify", func() bool { return query(fresh) == nil })
	if err := query(old); err != nil {
		t.Fatalf("the previous key no longer verifies after a rotation: %v", err)
	}

	// The old key is withdrawn (compromised, say): only the new key is published.
	only, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: newKey.Public, KeyID: newKey.ID, Algorithm: "EdDSA", Use: "sig"}}})
	if err := os.WriteFile(path, only, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the withdrawn key to stop verifying", func() bool {
		err := query(old)
		var r *decision.Refusal
		return errors.As(err, &r) && r.Reason == consent.ReasonUnknownKey
	})
	if err := query(fresh); err != nil {
		t.Fatalf("the new key stopped verifying: %v", err)
	}

	// A JWKS that turns into a private key is ignored: the keys in use stay.
	privSet, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: ks2.Signing().Private, KeyID: newKey.ID}}})
	if err := os.WriteFile(path, privSet, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to refuse the private file", func() bool { return strings.Contains(logs.String(), consent.ErrPrivateKey.Error()) })
	if err := query(fresh); err != nil {
		t.Fatalf("the keys in use were dropped: %v", err)
	}
	if _, ok := pub.Verifying(newKey.ID, time.Now()); !ok || pub.Signing().Private != nil {
		t.Fatal("the watcher loaded private key material")
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor waits up to 10s until cond holds (bustest.Eventually).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	bustest.Eventually(t, 10*time.Second, func() error { return bustest.Check(cond(), what) })
}

// Attack: a private key hidden where the loader did not look — nested in a
// public JWK, in a second key set beside "keys", in an array, or in an
// earlier duplicate "keys" member that encoding/json would overwrite — is
// still found, and the gateway's key material refused.
func TestJWKSPrivateKeyHiddenAnywhereIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := consent.InitKeys(dir); err != nil {
		t.Fatal(err)
	}
	keys, err := consent.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := keys.Signing()
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: k.Public, KeyID: k.ID, Algorithm: "EdDSA", Use: "sig"})
	privJWK, _ := json.Marshal(jose.JSONWebKey{Key: k.Private, KeyID: k.ID, Algorithm: "EdDSA", Use: "sig"})
	pub, priv := string(pubJWK), string(privJWK)
	nested := strings.Replace(pub, `{`, `{"ext":`+priv+`,`, 1)
	if _, err := consent.ParseJWKS([]byte(`{"keys":[` + pub + `]}`)); err != nil {
		t.Fatalf("the public set itself: %v", err)
	}
	for name, b := range map[string]string{
		"a private JWK nested in a public one":  `{"keys":[` + nested + `]}`,
		"a second key set beside keys":          `{"keys":[` + pub + `],"backup":{"keys":[` + priv + `]}}`,
		"a private JWK in another array":        `{"keys":[` + pub + `],"old":[[` + priv + `]]}`,
		"an earlier duplicate keys member":      `{"keys":[` + priv + `],"keys":[` + pub + `]}`,
		"a case-variant keys member first":      `{"KEYS":[` + priv + `],"keys":[` + pub + `]}`,
		"a private member spelled with escapes": `{"keys":[` + strings.Replace(priv, `"d":`, `"\u0064":`, 1) + `]}`,
		"a private member nested in capitals":   `{"keys":[` + strings.Replace(nested, `"d":`, `"D":`, 1) + `]}`,
	} {
		if _, err := consent.ParseJWKS([]byte(b)); !errors.Is(err, consent.ErrPrivateKey) {
			t.Errorf("%s: %v, want ErrPrivateKey", name, err)
		}
	}
}

// Attack (phase 2): the gateway's public JWKS is not secret, but whoever can
// write it can add a key and mint any consent. A JWKS file writable by group
// or others is refused at load, and a reload from such a file is ignored.
func TestJWKSWritableByOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := consent.InitKeys(dir); err != nil {
		t.Fatal(err)
	}
	path := consent.JWKSPath(dir)
	for _, mode := range []os.FileMode{0o666, 0o664, 0o646, 0o662} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := consent.LoadJWKS(path); !errors.Is(err, consent.ErrJWKSWritable) {
			t.Errorf("mode %04o: %v, want ErrJWKSWritable", mode, err)
		}
	}
	link := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := consent.LoadJWKS(link); !errors.Is(err, consent.ErrJWKSWritable) {
		t.Errorf("a symlink to a writable JWKS: %v, want ErrJWKSWritable", err)
	}
	for _, mode := range []os.FileMode{0o644, 0o600, 0o444} {
		os.Chmod(path, mode)
		if _, err := consent.LoadJWKS(path); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}

	// A reload from a file made writable by others is ignored.
	os.Chmod(path, 0o644)
	ks, err := consent.LoadJWKS(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	stop := consent.WatchJWKS(path, ks, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
	defer stop()
	other := t.TempDir()
	if err := consent.InitKeys(other); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(consent.JWKSPath(other))
	if err := os.Chmod(path, 0o666); err != nil { // writable first, then written
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o666); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to refuse the writable file", func() bool { return strings.Contains(logs.String(), consent.ErrJWKSWritable.Error()) })
	otherKeys, _ := consent.LoadKeys(other)
	if _, ok := ks.Verifying(otherKeys.Signing().ID, time.Now()); ok {
		t.Fatal("a key from a file writable by others was loaded")
	}
}
