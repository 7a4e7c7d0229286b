package federation_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/federation"
)

func TestBundleSignedVerifiedAndRefused(t *testing.T) {
	dir := t.TempDir()
	if err := federation.InitGovernanceKey(dir); err != nil {
		t.Fatal(err)
	}
	key, err := federation.LoadGovernanceKey(federation.GovernanceKeyPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := federation.LoadGovernancePub(federation.GovernancePubPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := federation.Load("../../deploy/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sets := loaded.Descriptors
	raw, err := federation.Sign(&federation.Bundle{Version: 3, Created: time.Now(), Federation: file, Descriptors: sets}, key)
	if err != nil {
		t.Fatal(err)
	}
	trusted := []ed25519.PublicKey{pub}
	b, fed, err := federation.Verify(raw, trusted, 2)
	if err != nil || b.Version != 3 || len(fed.Members) == 0 {
		t.Fatalf("a good bundle: %v %v", b, err)
	}

	// Tampered: one rule's purpose changed inside the signed payload.
	var s federation.Signed
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	var inner federation.Bundle
	if err := json.Unmarshal(s.Payload, &inner); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(inner.Federation, []byte("amo-enrolment")) {
		t.Fatal("the demo federation changed: pick another purpose to tamper with")
	}
	inner.Federation = bytes.Replace(inner.Federation, []byte("amo-enrolment"), []byte("amo-marketing"), 1)
	s.Payload, _ = json.Marshal(inner)
	tampered, _ := json.Marshal(s)
	other, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, err := federation.Sign(&federation.Bundle{Version: 9, Federation: file, Descriptors: sets}, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		raw     []byte
		trusted []ed25519.PublicKey
		running uint64
		want    error
	}{
		{"tampered payload", tampered, trusted, 0, federation.ErrBadSignature},
		{"signed by another key", forged, trusted, 0, federation.ErrBadSignature},
		{"no trusted key", raw, nil, 0, federation.ErrBadSignature},
		{"the running version", raw, trusted, 3, federation.ErrNotNewer},
		{"older than the running one", raw, trusted, 7, federation.ErrNotNewer},
		{"unknown field", []byte(`{"payload":"e30=","key_id":"x","signature":"","extra":1}`), trusted, 0, federation.ErrBadBundle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := federation.Verify(tc.raw, tc.trusted, tc.running); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, _, err := federation.Verify(forged, []ed25519.PublicKey{other}, 0); err != nil {
		t.Fatalf("the other key's bundle with the other key trusted: %v", err)
	}
	if _, err := federation.Sign(&federation.Bundle{Version: 4, Federation: []byte("members: [")}, key); err == nil {
		t.Fatal("signed a federation file that does not parse")
	}
	os.Chmod(federation.GovernanceKeyPath(dir), 0o640)
	if _, err := federation.LoadGovernanceKey(federation.GovernanceKeyPath(dir)); err == nil {
		t.Fatal("loaded a governance key open to its group")
	}
}
