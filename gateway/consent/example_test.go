package consent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// revoked is a set of revoked token IDs. In the gateway it is the JetStream
// watcher of the jisr_revocations bucket (Store.WatchRevocations).
type revoked map[string]bool

func (r revoked) Revoked(jti string) bool { return r[jti] }

// The consent service issues a token for one citizen, consumer, service,
// purpose and set of fields; the gateway's verifier checks it against the
// query it comes with, and refuses it once revoked.
func ExampleNewVerifier() {
	dir, err := os.MkdirTemp("", "consent-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	if err := consent.InitKeys(dir); err != nil { // what `jisr certs init` does
		fmt.Println(err)
		return
	}
	keys, err := consent.LoadKeys(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	issuer := spiffeid.RequireFromString("spiffe://jisr.internal/consent")
	cnss := spiffeid.RequireFromString("spiffe://jisr.internal/member/cnss")
	const service = "jisr.civilregistry.v1.CivilRegistry"

	token, claims, err := consent.NewIssuer(keys, issuer).Issue(&consent.Request{
		CKey: "CKEYOFTHECITIZEN", Audience: cnss, Service: service, Methods: []string{"GetPerson"},
		Fields: []string{"person.names", "person.birth"}, Purpose: "amo-enrolment", LegalBasis: "consent", TTL: time.Hour,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// The gateway holds only the public keys.
	rev := revoked{}
	v, err := consent.NewVerifier(consent.VerifierConfig{Keys: keys.PublicOnly(), Issuer: issuer}, consent.WithRevocations(rev))
	if err != nil {
		fmt.Println(err)
		return
	}
	query := &decision.Request{ConsumerID: cnss, CKey: "CKEYOFTHECITIZEN", Service: service, Method: "GetPerson", Purpose: "amo-enrolment", Token: token}
	grant, err := v.Verify(context.Background(), query)
	fmt.Println(grant.Fields, err)

	other := *query
	other.Purpose = "family-allowance"
	_, err = v.Verify(context.Background(), &other)
	var refusal *decision.Refusal
	fmt.Println(errors.As(err, &refusal), refusal.Code, refusal.Reason)

	rev[claims.ID] = true // the citizen revokes it
	_, err = v.Verify(context.Background(), query)
	fmt.Println(errors.As(err, &refusal), refusal.Code, refusal.Reason)
	// Output:
	// [person.names person.birth] <nil>
	// true PermissionDenied CONSENT_PURPOSE_MISMATCH
	// true PermissionDenied CONSENT_REVOKED
}
