package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func root(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func TestSignOpenRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	origin := Origin("jisr.internal", "gw-1")
	kp, created, err := EnsureKey(dir, "gw-1", origin)
	if err != nil || !created {
		t.Fatalf("EnsureKey: created=%v err=%v", created, err)
	}
	c := Checkpoint{Origin: origin, Size: 42, Root: root("x")}
	signed, err := Sign(c, kp.Signer)
	if err != nil {
		t.Fatal(err)
	}
	// The C2SP shape: three body lines, a blank line, a signature line.
	lines := strings.Split(signed, "\n")
	if lines[0] != origin || lines[1] != "42" || lines[3] != "" || !strings.HasPrefix(lines[4], "— "+origin+" ") {
		t.Fatalf("unexpected checkpoint text:\n%s", signed)
	}
	keys, err := ParseKeys(kp.VerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(signed, keys.Verifiers())
	if err != nil {
		t.Fatal(err)
	}
	if got.Origin != origin || got.Size != 42 || !bytes.Equal(got.Root, c.Root) {
		t.Fatalf("opened %+v", got)
	}
	if LogID("jisr.internal", got.Origin) != "gw-1" {
		t.Fatal("LogID does not invert Origin")
	}
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	origin := Origin("jisr.internal", "gw-1")
	kp, _, err := EnsureKey(dir, "gw-1", origin)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := EnsureKey(dir, "gw-2", Origin("jisr.internal", "gw-2"))
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := ParseKeys(kp.VerifierKey, other.VerifierKey)
	signed, _ := Sign(Checkpoint{Origin: origin, Size: 7, Root: root("a")}, kp.Signer)

	tampered := strings.Replace(signed, "\n7\n", "\n8\n", 1)
	if _, err := Open(tampered, keys.Verifiers()); !errors.Is(err, ErrUntrusted) {
		t.Errorf("tampered size: %v, want ErrUntrusted", err)
	}
	onlyOther, _ := ParseKeys(other.VerifierKey)
	if _, err := Open(signed, onlyOther.Verifiers()); !errors.Is(err, ErrUntrusted) {
		t.Errorf("unknown key: %v, want ErrUntrusted", err)
	}
	if _, err := Open("not a note", keys.Verifiers()); !errors.Is(err, ErrMalformed) {
		t.Errorf("garbage: %v, want ErrMalformed", err)
	}
	// gw-2's key signing a checkpoint that claims to be gw-1's log.
	if _, err := Sign(Checkpoint{Origin: origin, Size: 1, Root: root("b")}, other.Signer); !errors.Is(err, ErrOriginMismatch) {
		t.Errorf("Sign with another log's key: %v", err)
	}
}

func TestParseBody(t *testing.T) {
	t.Parallel()
	good := Checkpoint{Origin: "jisr.internal/audit/gw-1", Size: 3, Root: root("r")}.Body()
	if c, err := ParseBody(append(bytes.Clone(good), "extension line\n"...)); err != nil || c.Size != 3 {
		t.Fatalf("extension lines must be accepted: %v", err)
	}
	for name, body := range map[string]string{
		"no newline":    strings.TrimSuffix(string(good), "\n"),
		"two lines":     "o\n3\n",
		"size with +":   "o\n+3\n" + strings.Split(string(good), "\n")[2] + "\n",
		"size leading0": "o\n03\n" + strings.Split(string(good), "\n")[2] + "\n",
		"short root":    "o\n3\nAAAA\n",
		"empty origin":  "\n3\n" + strings.Split(string(good), "\n")[2] + "\n",
		"space origin":  "a b\n3\n" + strings.Split(string(good), "\n")[2] + "\n",
	} {
		if _, err := ParseBody([]byte(body)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestEnsureKeyReloadsAndChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	origin := Origin("jisr.internal", "gw-1")
	k1, _, err := EnsureKey(dir, "gw-1", origin)
	if err != nil {
		t.Fatal(err)
	}
	k2, created, err := EnsureKey(dir, "gw-1", origin)
	if err != nil || created || k1.VerifierKey != k2.VerifierKey {
		t.Fatalf("second EnsureKey: created=%v err=%v", created, err)
	}
	priv, pub := KeyPaths(dir, "gw-1")
	if fi, _ := os.Stat(priv); fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", fi.Mode().Perm())
	}
	// The key belongs to another origin (e.g. another trust domain).
	if _, _, err := EnsureKey(dir, "gw-1", Origin("other.td", "gw-1")); !errors.Is(err, ErrKey) {
		t.Fatalf("key of another origin: %v", err)
	}
	// A public key that is not the private key's pair.
	other, _, _ := EnsureKey(dir, "gw-9", Origin("jisr.internal", "gw-9"))
	if err := os.WriteFile(pub, []byte(other.VerifierKey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureKey(dir, "gw-1", origin); !errors.Is(err, ErrKey) {
		t.Fatalf("mismatched pair: %v", err)
	}
	// A missing public key next to an existing private key is an error, not a new key.
	if err := os.Remove(pub); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureKey(dir, "gw-1", origin); !errors.Is(err, ErrKey) {
		t.Fatalf("missing public key: %v", err)
	}
	if _, err := os.Stat(pub); err == nil {
		t.Fatal("EnsureKey overwrote a key pair")
	}
	// Corrupt private key.
	if err := os.WriteFile(filepath.Join(dir, "gw-3.key"), []byte("PRIVATE+KEY+garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(filepath.Join(dir, "gw-3.key"), filepath.Join(dir, "gw-9.pub")); !errors.Is(err, ErrKey) {
		t.Fatalf("corrupt private key: %v", err)
	}
	if _, _, err := EnsureKey(dir, "gw.1", origin); !errors.Is(err, ErrKey) {
		t.Fatalf("unsafe log id: %v", err)
	}
}

func TestLoadPublicKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, id := range []string{"gw-1", "gw-2"} {
		if _, _, err := EnsureKey(dir, id, Origin("jisr.internal", id)); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := LoadPublicKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := keys.Names(); len(got) != 2 || got[0] != "jisr.internal/audit/gw-1" {
		t.Fatalf("names %v", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.pub"), []byte("nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPublicKeys(dir); !errors.Is(err, ErrKey) {
		t.Fatalf("bad public key: %v", err)
	}
	if _, err := LoadPublicKeys(filepath.Join(dir, "missing")); !errors.Is(err, ErrKey) {
		t.Fatalf("missing dir: %v", err)
	}
}
