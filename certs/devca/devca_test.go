package devca

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/jisr-bus/jisr/certs/svid"
)

var td = spiffeid.RequireTrustDomainFromString("jisr.internal")

func TestIssueVerifies(t *testing.T) {
	t.Parallel()
	ca, err := New(td)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/member/cnss")
	s, err := ca.Issue(id)
	if err != nil {
		t.Fatal(err)
	}
	gotID, _, err := x509svid.Verify(s.Certificates, ca.Bundle())
	if err != nil || gotID != id {
		t.Fatalf("Verify = %v, %v", gotID, err)
	}
	if _, err := ca.Issue(spiffeid.RequireFromString("spiffe://other.org/x")); !errors.Is(err, ErrWrongTrustDomain) {
		t.Fatalf("err = %v", err)
	}
}

func TestInitIsIdempotentAndReissues(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ids := []spiffeid.ID{spiffeid.RequireFromPath(td, "/nats"), spiffeid.RequireFromPath(td, "/member/cnss")}
	r1, err := Init(dir, td, ids)
	if err != nil {
		t.Fatal(err)
	}
	if !r1.CACreated || len(r1.Created) != 2 {
		t.Fatalf("first init: %+v", r1)
	}
	r2, err := Init(dir, td, ids)
	if err != nil {
		t.Fatal(err)
	}
	if r2.CACreated || len(r2.Kept) != 2 || len(r2.Created)+len(r2.Reissued) != 0 {
		t.Fatalf("second init: %+v", r2)
	}
	nats, err := x509svid.Load(svid.Paths(dir, ids[0]))
	if err != nil {
		t.Fatal(err)
	}
	if len(nats.Certificates[0].IPAddresses) == 0 || nats.Certificates[0].DNSNames[0] != "localhost" {
		t.Fatal("the NATS server's SVID needs loopback SANs")
	}
	// An expired SVID is reissued.
	ca, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ca.Issue(ids[1], WithNotBefore(time.Now().Add(-48*time.Hour)), WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSVID(dir, old); err != nil {
		t.Fatal(err)
	}
	r3, err := Init(dir, td, ids)
	if err != nil || len(r3.Reissued) != 1 || r3.Reissued[0] != ids[1] {
		t.Fatalf("third init: %+v, %v", r3, err)
	}
	// Key files are private.
	_, key := svid.Paths(dir, ids[1])
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", st.Mode().Perm())
	}
	if st, _ := os.Stat(filepath.Join(dir, "ca.key")); st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v", st.Mode().Perm())
	}
	// A CA of another trust domain in the directory is an error, not a silent mix.
	if _, err := Init(dir, spiffeid.RequireTrustDomainFromString("other.org"), nil); err == nil {
		t.Fatal("Init mixed trust domains")
	}
}

func TestLoadRejectsGarbage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, ErrNoCA) {
		t.Fatalf("err = %v", err)
	}
	os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("not pem"), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.key"), []byte("not pem"), 0o600)
	if _, err := Load(dir); err == nil {
		t.Fatal("loaded a corrupt CA")
	}
}

func TestSignWithoutURI(t *testing.T) {
	t.Parallel()
	ca, _ := New(td)
	s, _ := ca.Issue(spiffeid.RequireFromPath(td, "/x"))
	c, err := ca.Sign(&x509.Certificate{NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, s.PrivateKey.Public())
	if err != nil || len(c.URIs) != 0 {
		t.Fatalf("%v %v", c, err)
	}
}
