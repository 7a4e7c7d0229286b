// Package checkpoint writes, signs and opens the checkpoints of jisr's audit
// logs in the C2SP tlog-checkpoint format: a signed note (C2SP signed-note,
// Ed25519) whose body is the log's origin, its tree size and the base64 RFC
// 6962 root hash. It also keeps the signing keys, one per log, on disk.
//
// Invariant: a Checkpoint returned by Open carries a signature that verified
// against a trusted key whose name is the checkpoint's origin; a body that
// does not follow the format exactly is refused, never half-read.
package checkpoint

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/jisr-bus/jisr/bus/subject"
)

// HashSize is the size of an RFC 6962 SHA-256 hash.
const HashSize = 32

// Sentinel errors.
var (
	// ErrMalformed: the text is not a well-formed checkpoint.
	ErrMalformed = errors.New("checkpoint: malformed checkpoint")
	// ErrUntrusted: no trusted key signed the checkpoint, or its signature is bad.
	ErrUntrusted = errors.New("checkpoint: not signed by a trusted key")
	// ErrOriginMismatch: the signer's name is not the checkpoint's origin.
	ErrOriginMismatch = errors.New("checkpoint: signed by the key of another log")
	// ErrKey: a key file is missing, unreadable or malformed.
	ErrKey = errors.New("checkpoint: bad key")
)

// Checkpoint is the signed statement "log Origin has Size leaves whose RFC
// 6962 root hash is Root".
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   []byte
}

// Origin names the log of one gateway instance in a trust domain, e.g.
// "jisr.internal/audit/gw-1". It is also the name of the log's signing key.
func Origin(trustDomain, logID string) string {
	return trustDomain + "/audit/" + logID
}

// LogID returns the log id of an origin built by Origin, or "" when the
// origin does not belong to the trust domain's audit logs.
func LogID(trustDomain, origin string) string {
	id, ok := strings.CutPrefix(origin, trustDomain+"/audit/")
	if !ok || subject.CheckToken(id) != nil {
		return ""
	}
	return id
}

// Body renders the unsigned checkpoint text.
func (c Checkpoint) Body() []byte {
	var b bytes.Buffer
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root))
	b.WriteByte('\n')
	return b.Bytes()
}

// ParseBody parses an unsigned checkpoint body. Extension lines after the
// root are allowed by C2SP and ignored.
func ParseBody(body []byte) (Checkpoint, error) {
	text := string(body)
	if !strings.HasSuffix(text, "\n") {
		return Checkpoint{}, fmt.Errorf("%w: body must end with a newline", ErrMalformed)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%w: want origin, size and root lines", ErrMalformed)
	}
	origin := lines[0]
	if origin == "" || strings.ContainsAny(origin, " \t+") {
		return Checkpoint{}, fmt.Errorf("%w: bad origin line", ErrMalformed)
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("%w: bad tree size line", ErrMalformed)
	}
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != HashSize {
		return Checkpoint{}, fmt.Errorf("%w: bad root hash line", ErrMalformed)
	}
	return Checkpoint{Origin: origin, Size: size, Root: root}, nil
}

// Sign returns the signed note of c. The signer's name must be c.Origin.
func Sign(c Checkpoint, s note.Signer) (string, error) {
	if s.Name() != c.Origin {
		return "", fmt.Errorf("%w: key %q, origin %q", ErrOriginMismatch, s.Name(), c.Origin)
	}
	if len(c.Root) != HashSize {
		return "", fmt.Errorf("%w: root hash of %d bytes", ErrMalformed, len(c.Root))
	}
	b, err := note.Sign(&note.Note{Text: string(c.Body())}, s)
	if err != nil {
		return "", fmt.Errorf("checkpoint: sign: %w", err)
	}
	return string(b), nil
}

// Open verifies a signed checkpoint against trusted keys and parses it. The
// key that verified must be named after the checkpoint's origin.
func Open(signed string, trusted note.Verifiers) (Checkpoint, error) {
	n, err := note.Open([]byte(signed), trusted)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return Checkpoint{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
		}
		return Checkpoint{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	c, err := ParseBody([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	for _, sig := range n.Sigs {
		if sig.Name == c.Origin {
			return c, nil
		}
	}
	return Checkpoint{}, fmt.Errorf("%w: origin %q", ErrOriginMismatch, c.Origin)
}

// Keys maps origins to their verifiers: the trusted keys of a verifier.
type Keys struct {
	list  []note.Verifier
	vkeys []string
}

// ParseKeys parses verifier keys (<name>+<hash>+<base64 key>), one per entry.
func ParseKeys(vkeys ...string) (*Keys, error) {
	k := &Keys{}
	for _, s := range vkeys {
		v, err := note.NewVerifier(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%w: verifier key: %v", ErrKey, err)
		}
		k.list = append(k.list, v)
		k.vkeys = append(k.vkeys, strings.TrimSpace(s))
	}
	return k, nil
}

// VerifierKeys returns the keys in their text form, sorted.
func (k *Keys) VerifierKeys() []string { return slices.Sorted(slices.Values(k.vkeys)) }

// Verifiers returns the keys as note.Verifiers.
func (k *Keys) Verifiers() note.Verifiers { return note.VerifierList(k.list...) }

// Names returns the key names (origins), sorted.
func (k *Keys) Names() []string {
	out := make([]string, 0, len(k.list))
	for _, v := range k.list {
		out = append(out, v.Name())
	}
	slices.Sort(out)
	return out
}

// Len is the number of keys.
func (k *Keys) Len() int { return len(k.list) }

// Key files live in a directory (the certs directory's "audit"
// subdirectory): <log>.key holds the signed-note private key (mode 0600),
// <log>.pub the verifier key that auditors and citizens trust.
const (
	privateSuffix = ".key"
	publicSuffix  = ".pub"
)

// KeyPaths returns the private and public key files of a log in dir.
func KeyPaths(dir, logID string) (private, public string) {
	return filepath.Join(dir, logID+privateSuffix), filepath.Join(dir, logID+publicSuffix)
}

// KeyPair is a log's signing key and its verifier.
type KeyPair struct {
	Signer      note.Signer
	Verifier    note.Verifier
	VerifierKey string // <name>+<hash>+<base64 key>, what <log>.pub holds
}

// EnsureKey loads the signing key of a log from dir, creating the key pair on
// first use; created reports whether it did.
func EnsureKey(dir, logID, origin string) (kp *KeyPair, created bool, err error) {
	if err := subject.CheckToken(logID); err != nil {
		return nil, false, fmt.Errorf("%w: log id %q is not a safe name", ErrKey, logID)
	}
	priv, pub := KeyPaths(dir, logID)
	kp, err = LoadKey(priv, pub)
	if err == nil {
		if kp.Signer.Name() != origin {
			return nil, false, fmt.Errorf("%w: %s signs for %q, not %q", ErrKey, priv, kp.Signer.Name(), origin)
		}
		return kp, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	if _, serr := os.Stat(priv); serr == nil {
		return nil, false, err // the private key exists, only the public one is missing: never overwrite a key
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return nil, false, fmt.Errorf("%w: generate: %v", ErrKey, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrKey, err)
	}
	if err := writeExclusive(priv, skey+"\n", 0o600); err != nil {
		return nil, false, err
	}
	if err := writeExclusive(pub, vkey+"\n", 0o644); err != nil {
		return nil, false, err
	}
	kp, err = newKeyPair(skey, vkey, priv, pub)
	return kp, err == nil, err
}

// LoadKey reads a private key file and its public key file, and checks that
// they are a pair.
func LoadKey(privPath, pubPath string) (*KeyPair, error) {
	skey, err := os.ReadFile(privPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	vkey, err := os.ReadFile(pubPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return newKeyPair(strings.TrimSpace(string(skey)), strings.TrimSpace(string(vkey)), privPath, pubPath)
}

func newKeyPair(skey, vkey, privPath, pubPath string) (*KeyPair, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, privPath, err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKey, pubPath, err)
	}
	notPair := fmt.Errorf("%w: %s and %s are not a key pair", ErrKey, privPath, pubPath)
	if v.Name() != s.Name() || v.KeyHash() != s.KeyHash() {
		return nil, notPair
	}
	probe := []byte("jisr key pair check\n")
	sig, err := s.Sign(probe)
	if err != nil || !v.Verify(probe, sig) {
		return nil, notPair
	}
	return &KeyPair{Signer: s, Verifier: v, VerifierKey: vkey}, nil
}

// LoadPublicKeys reads every <log>.pub in dir.
func LoadPublicKeys(dir string) (*Keys, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	var vkeys []string
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), publicSuffix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		vkeys = append(vkeys, strings.TrimSpace(string(b)))
	}
	return ParseKeys(vkeys...)
}

func writeExclusive(path, content string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKey, err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", ErrKey, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", ErrKey, err)
	}
	return f.Close()
}

// ReadFile reads a signed checkpoint kept in a file (what WriteFile wrote, or
// a checkpoint copied from the stream) and verifies it against trusted keys.
// It returns the checkpoint and its signed text. A missing file is an
// os.ErrNotExist.
func ReadFile(path string, trusted note.Verifiers) (Checkpoint, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Checkpoint{}, "", err
	}
	c, err := Open(string(b), trusted)
	if err != nil {
		return Checkpoint{}, "", fmt.Errorf("%s: %w", path, err)
	}
	return c, string(b), nil
}

// WriteFile replaces the file at path with a signed checkpoint, atomically:
// a temporary file in the same directory, written and synced, renamed over
// path, and the directory synced. A crash leaves the old or the new
// checkpoint, never a torn one.
func WriteFile(path, signed string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if _, err := f.WriteString(signed); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
