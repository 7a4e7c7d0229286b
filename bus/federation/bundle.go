package federation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// A federation bundle is a version of the federation file signed by the
// governance key (the CNTI/CIGOV governance bodies in production; `jisr
// certs init` makes one in dev): what `jisr federation sign` writes, `jisr
// federation publish` puts in the operator's bucket, and components verify
// before they take a version. It is refused when its signature does not
// verify with a trusted governance key, or when it is not newer than the
// version already running.

// Sentinel errors of bundles.
var (
	ErrBadSignature = errors.New("federation bundle: signature does not verify with the governance key")
	ErrNotNewer     = errors.New("federation bundle: not newer than the running version")
	ErrBadBundle    = errors.New("federation bundle: malformed")
)

// bundleDomain separates the governance key's signatures from any other use
// of an Ed25519 key.
const bundleDomain = "jisr federation bundle v1\n"

// Bundle is one signed version of the federation.
type Bundle struct {
	Version uint64    `json:"version"`
	Created time.Time `json:"created"`
	// Federation is the federation file, as written.
	Federation []byte `json:"federation"`
	// Descriptors are the descriptor sets the federation file names
	// (descriptor_sets), by file name: signed with it, so a component
	// gets a new member's services with the version (bus/descset).
	Descriptors map[string][]byte `json:"descriptors,omitempty"`
}

// checkDescriptors: the bundle carries exactly the descriptor sets the
// federation names, each with its digest.
func (b *Bundle) checkDescriptors(fed *Federation) error {
	if len(b.Descriptors) != len(fed.DescriptorSets) {
		return fmt.Errorf("%w: %d descriptor sets carried, the federation file names %d", ErrBadBundle, len(b.Descriptors), len(fed.DescriptorSets))
	}
	for _, ref := range fed.DescriptorSets {
		raw, ok := b.Descriptors[ref.File]
		if !ok {
			return fmt.Errorf("%w: descriptor set %s not carried", ErrBadBundle, ref.File)
		}
		sum := sha256.Sum256(raw)
		if hex.EncodeToString(sum[:]) != ref.SHA256 {
			return fmt.Errorf("%w: descriptor set %s does not have the digest the federation file names", ErrBadBundle, ref.File)
		}
	}
	return nil
}

// Digest is "sha256:<hex>" of the bundle's federation file.
func (b *Bundle) Digest() string {
	sum := sha256.Sum256(b.Federation)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Signed is a bundle as stored: the exact payload bytes and their signature.
type Signed struct {
	Payload   []byte `json:"payload"` // JSON of Bundle
	KeyID     string `json:"key_id"`
	Signature []byte `json:"signature"`
}

// Sign signs b with the governance key.
func Sign(b *Bundle, key ed25519.PrivateKey) ([]byte, error) {
	if b.Version == 0 {
		return nil, fmt.Errorf("%w: version must be at least 1", ErrBadBundle)
	}
	fed, err := Parse(b.Federation)
	if err != nil {
		return nil, err
	}
	if err := b.checkDescriptors(fed); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	return json.MarshalIndent(Signed{Payload: payload, KeyID: GovernanceKeyID(pub),
		Signature: ed25519.Sign(key, append([]byte(bundleDomain), payload...))}, "", "  ")
}

// Verify checks a signed bundle against the trusted governance keys and
// the running version (0: none), and parses its federation file.
func Verify(raw []byte, trusted []ed25519.PublicKey, running uint64) (*Bundle, *Federation, error) {
	var s Signed
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadBundle, err)
	}
	ok := false
	for _, k := range trusted {
		if GovernanceKeyID(k) == s.KeyID && ed25519.Verify(k, append([]byte(bundleDomain), s.Payload...), s.Signature) {
			ok = true
		}
	}
	if !ok {
		return nil, nil, ErrBadSignature
	}
	var b Bundle
	dec = json.NewDecoder(bytes.NewReader(s.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadBundle, err)
	}
	if b.Version <= running {
		return &b, nil, fmt.Errorf("%w: version %d, running %d", ErrNotNewer, b.Version, running)
	}
	fed, err := Parse(b.Federation)
	if err != nil {
		return &b, nil, err
	}
	if err := b.checkDescriptors(fed); err != nil {
		return &b, nil, err
	}
	return &b, fed, nil
}

// GovernanceKeyID names a governance key: the first 16 hex digits of the
// SHA-256 of the public key.
func GovernanceKeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Governance key files in the certs directory.
func GovernanceKeyPath(certsDir string) string {
	return filepath.Join(certsDir, "governance", "governance.key")
}

func GovernancePubPath(certsDir string) string {
	return filepath.Join(certsDir, "governance", "governance.pub")
}

// InitGovernanceKey creates the governance key pair when it is missing.
func InitGovernanceKey(certsDir string) error {
	if _, err := os.Stat(GovernanceKeyPath(certsDir)); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(GovernanceKeyPath(certsDir)), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(GovernancePubPath(certsDir), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(GovernanceKeyPath(certsDir), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// LoadGovernanceKey reads the private governance key (refused when group or
// others may read it).
func LoadGovernanceKey(path string) (ed25519.PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("governance key %s is open to group or others (%v): chmod 600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("governance key %s: no PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("governance key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("governance key %s is not Ed25519", path)
	}
	return priv, nil
}

// LoadGovernancePub reads a trusted governance public key.
func LoadGovernancePub(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("governance public key %s: no PUBLIC KEY block", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("governance public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("governance public key %s is not Ed25519", path)
	}
	return pub, nil
}
