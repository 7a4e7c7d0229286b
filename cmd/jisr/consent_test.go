package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	"github.com/jisr-bus/jisr/gateway/audit/auditor"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// `jisr gateway` refuses to start when its consent key material holds a
// private key (the signing key belongs to the consent service alone), and
// when it has no public keys at all.
func TestGatewayRefusesPrivateConsentKey(t *testing.T) {
	certs := t.TempDir()
	if err := consent.InitKeys(certs); err != nil {
		t.Fatal(err)
	}
	keys, err := consent.LoadKeys(certs)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, _ := filepath.Glob(filepath.Join(consent.KeyDir(certs), "*.key"))
	k := keys.Signing()
	privSet, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.Private, KeyID: k.ID, Algorithm: "EdDSA"}}})
	privJWKS := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(privJWKS, privSet, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &auditFed{g: &process.Env{FederationPath: "../testdata/federation.yaml", CertsDir: certs, DataDir: t.TempDir(), NATSURL: "tls://127.0.0.1:1"}}
	for name, path := range map[string]string{"the PEM signing key": pemKey[0], "a JWKS with the private key": privJWKS} {
		_, _, err := f.cli("gateway", "--consent-jwks", path, "--http", "127.0.0.1:0", "--grpc", "")
		if !errors.Is(err, consent.ErrPrivateKey) {
			t.Errorf("%s: %v, want the gateway refused with ErrPrivateKey", name, err)
		}
	}
	_, _, err = f.cli("gateway", "--consent-jwks", filepath.Join(t.TempDir(), "none.json"), "--http", "127.0.0.1:0", "--grpc", "")
	if err == nil || !strings.Contains(err.Error(), "consent keys") {
		t.Errorf("no public keys: %v, want the gateway refused", err)
	}
}

// A token minted --offline has no recorded grant; `jisr consent revoke
// <jti>` revokes it all the same, and the gateway then refuses it.
func TestRevokeOfflineTokenByJTI(t *testing.T) {
	f := startAuditFed(t, t.TempDir())
	eid := eidN(50)
	tok, stderr, err := f.cli("consent", "grant", "--offline", "--citizen", eid, "--to", "cnss",
		"--service", "jisr.civilregistry.v1.CivilRegistry", "--methods", "GetPerson", "--purpose", "amo-enrolment", "--ttl", "1h")
	if err != nil {
		t.Fatalf("grant --offline: %v\n%s", err, stderr)
	}
	tok = strings.TrimSpace(tok)
	c, err := consent.Inspect(mustPublicKeys(t, f.g.CertsDir), tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	getPerson := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := f.cnss.GetPerson(md(ctx, "jisr-purpose", "amo-enrolment", "jisr-consent", tok), &civilv1.GetPersonRequest{Eid: eid})
		return err
	}
	if err := getPerson(); err != nil {
		t.Fatalf("the offline token before revocation: %v", err)
	}
	// consent inspect checks revocation when it can reach the federation,
	// and says plainly when it did not.
	if _, stderr, err := f.cli("consent", "inspect", tok); err != nil || !strings.Contains(stderr, "revocation: checked") {
		t.Errorf("inspect before revocation: %v\n%s", err, stderr)
	}
	if _, stderr, err := f.cli("consent", "inspect", "--offline", tok); err != nil || !strings.Contains(stderr, "revocation: NOT checked (--offline)") {
		t.Errorf("inspect --offline: %v\n%s", err, stderr)
	}
	out, stderr, err := f.cli("consent", "revoke", c.ID)
	if err != nil {
		t.Fatalf("revoke an offline token: %v\n%s", err, stderr)
	}
	if !strings.Contains(out, "no grant recorded") {
		t.Errorf("revoke output: %q", out)
	}
	// The running consent service did it, and wrote it to its audit log
	// first (the operator's action, OperatorRevoke).
	an, asrc, err := f.g.Connect(t.Context(), "auditor")
	if err != nil {
		t.Fatal(err)
	}
	defer asrc.Close()
	defer an.Close()
	streams, err := auditor.Open(t.Context(), an)
	if err != nil {
		t.Fatal(err)
	}
	sel := &auditor.Selection{Log: consent.AuditLogID}
	if err := sel.Resolve(); err != nil {
		t.Fatal(err)
	}
	found := 0
	if err := streams.Query(t.Context(), sel, func(_ stream.Msg, r *auditv1.Record) error {
		if r.GetMethod() == consent.ActionOperatorRevoke && r.GetTokenId() == c.ID && r.GetReason() == consent.ReasonOperatorAction {
			found++
		}
		return nil
	}, func(seq uint64) { t.Errorf("unreadable record at %d", seq) }); err != nil {
		t.Fatal(err)
	}
	if found != 1 {
		t.Errorf("the CLI's revocation is in the consent log %d times, want once", found)
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		st := status.Convert(getPerson())
		if st.Code() == codes.PermissionDenied && decision.ReasonOf(st) == consent.ReasonRevoked {
			return nil
		}
		return fmt.Errorf("the revoked offline token still gets %v", st)
	})
	if _, _, err := f.cli("consent", "inspect", tok); err == nil || !strings.Contains(err.Error(), "REVOKED") {
		t.Errorf("inspect after revocation: %v, want REVOKED", err)
	}
	for _, bad := range []string{"*", ">", "a b", "../x", strings.Repeat("a", 500)} {
		var ue process.UsageError
		if _, _, err := f.cli("consent", "revoke", bad); !errors.As(err, &ue) {
			t.Errorf("revoke %q: %v, want a usage error", bad, err)
		}
	}
}

func mustPublicKeys(t *testing.T, certs string) *consent.KeySet {
	t.Helper()
	ks, err := consent.LoadJWKS(consent.JWKSPath(certs))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}
