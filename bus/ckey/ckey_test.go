package ckey

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jisr-bus/jisr/bus/subject"
)

func TestCKeyIsKeyedStableAndSubjectSafe(t *testing.T) {
	t.Parallel()
	k1, err := New(bytes.Repeat([]byte{1}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := New(bytes.Repeat([]byte{2}, KeySize))
	a, b := k1.CKey("AB123456"), k1.CKey("AB123456")
	if a != b {
		t.Fatal("same eID, same key: ckeys differ")
	}
	if k2.CKey("AB123456") == a {
		t.Fatal("another federation key gave the same ckey")
	}
	if k1.CKey("AB123457") == a {
		t.Fatal("another eID gave the same ckey")
	}
	if len(a) != Len || strings.Contains(a, "AB123456") || subject.CheckToken(a) != nil {
		t.Fatalf("ckey %q: want %d subject-safe characters without the eID", a, Len)
	}
	if !Equal(a, b) || Equal(a, k2.CKey("AB123456")) {
		t.Fatal("Equal is wrong")
	}
}

func TestShortKeyRefused(t *testing.T) {
	t.Parallel()
	if _, err := New(make([]byte, KeySize-1)); !errors.Is(err, ErrBadKey) {
		t.Fatalf("err = %v, want ErrBadKey", err)
	}
}

func TestGenerateLoad(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "k", "citizen.key")
	if err := Generate(p); err != nil {
		t.Fatal(err)
	}
	if err := Generate(p); err == nil {
		t.Fatal("Generate overwrote an existing key")
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	k, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := Load(p)
	if k.CKey("X1") != k2.CKey("X1") {
		t.Fatal("two loads of one key disagree")
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("not hex"), 0o600)
	if _, err := Load(bad); !errors.Is(err, ErrBadKey) {
		t.Fatalf("err = %v, want ErrBadKey", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "jisr certs init") {
		t.Fatalf("missing key error should say how to create it: %v", err)
	}
}

func BenchmarkCKey(b *testing.B) {
	k, _ := New(bytes.Repeat([]byte{1}, KeySize))
	b.ReportAllocs()
	for b.Loop() {
		_ = k.CKey("AB123456")
	}
}
