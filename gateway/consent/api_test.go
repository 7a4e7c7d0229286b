package consent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	signin "github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// The consent API over HTTP/JSON and gRPC: the citizen is whoever the
// session names, and can act only on their own consents.
func TestConsentAPI(t *testing.T) {
	t.Parallel()
	f := start(t, 1)
	sessions, err := signin.New(signin.Config{Federation: f.env.Fed, Keyer: f.env.Keyer})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway's face of the consent API: no signing key, public keys for
	// the JWKS, grants and revocations asked of the consent service over NATS.
	svc := &consent.Service{Backend: consent.NewClient(f.gwNC), Keys: f.pub, Federation: f.env.Fed}
	mux := http.NewServeMux()
	for p, h := range svc.Routes(sessions) {
		mux.Handle(p, h)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	mine, _ := sessions.IssueSession(f.env.Keyer.CKey(citizen))
	theirs, _ := sessions.IssueSession(f.env.Keyer.CKey(other))

	do := func(method, path, session string, body any) (int, map[string]any) {
		var rd bytes.Buffer
		if body != nil {
			json.NewEncoder(&rd).Encode(body)
		}
		req, _ := http.NewRequest(method, srv.URL+path, &rd)
		if session != "" {
			req.Header.Set("Authorization", "Bearer "+session)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	grant := consent.GrantRequest{To: "cnss", Service: svc.Federation.Rules[0].Service, Methods: []string{"GetPerson"}, Purpose: purpose, TTL: "1h"}
	if code, _ := do("POST", "/v1/consents", "", grant); code != http.StatusUnauthorized {
		t.Fatalf("grant without login: %d", code)
	}
	if code, _ := do("POST", "/v1/consents", "forged.session", grant); code != http.StatusUnauthorized {
		t.Fatalf("grant with a forged session: %d", code)
	}
	code, out := do("POST", "/v1/consents", mine, grant)
	if code != http.StatusCreated || out["token"] == nil {
		t.Fatalf("grant: %d %v", code, out)
	}
	jti := out["jti"].(string)
	// The token works at the gateway.
	if _, err := f.call(t, f.cnss, "cnss", citizen, out["token"].(string), purpose); err != nil {
		t.Fatalf("the granted token was refused: %v", err)
	}
	if code, _ := do("POST", "/v1/consents", mine, consent.GrantRequest{To: "nobody", Service: grant.Service, Methods: grant.Methods, Purpose: purpose}); code != http.StatusBadRequest {
		t.Fatalf("grant to a non-member: %d", code)
	}
	// Attacks of phase 2 (r12-attack): a body past the limit, a lifetime
	// past 90 days, negative uses, a basis a citizen cannot give.
	huge := grant
	huge.Fields = []string{strings.Repeat("x", 70<<10)}
	for name, g := range map[string]consent.GrantRequest{
		"a body over 64 KiB":   huge,
		"a ttl over 90 days":   {To: "cnss", Service: grant.Service, Methods: grant.Methods, Purpose: purpose, TTL: "2161h"},
		"negative max_uses":    {To: "cnss", Service: grant.Service, Methods: grant.Methods, Purpose: purpose, TTL: "1h", MaxUses: -1},
		"a mandate as basis":   {To: "cnss", Service: grant.Service, Methods: grant.Methods, Purpose: purpose, TTL: "1h", LegalBasis: "mandate"},
		"a method not a token": {To: "cnss", Service: grant.Service, Methods: []string{"Get.*"}, Purpose: purpose, TTL: "1h"},
	} {
		if code, _ := do("POST", "/v1/consents", mine, g); code != http.StatusBadRequest {
			t.Errorf("grant with %s: %d", name, code)
		}
	}
	if code, out := do("GET", "/v1/consents", mine, nil); code != http.StatusOK || len(out["consents"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, out)
	}
	if code, _ := do("DELETE", "/v1/consents/"+jti, theirs, nil); code != http.StatusNotFound {
		t.Fatalf("another citizen revoked my consent: %d", code)
	}
	if code, out := do("DELETE", "/v1/consents/"+jti, mine, nil); code != http.StatusOK || out["revoked"] != true {
		t.Fatalf("revoke: %d %v", code, out)
	}
	if code, out := do("GET", "/.well-known/jwks.json", "", nil); code != http.StatusOK || len(out["keys"].([]any)) != 1 {
		t.Fatalf("jwks: %d %v", code, out)
	}

	// gRPC, on a real listener.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	consent.NewGRPC(svc, sessions).Register(gs)
	go gs.Serve(lis)
	defer gs.Stop()
	cc, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	client := consentv1.NewConsentClient(cc)
	as := func(session string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+session)
	}
	if _, err := client.ListConsents(context.Background(), &consentv1.ListConsentsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("gRPC list without login: %v", err)
	}
	// Metadata tricks (phase 2): a forged credential first and the real one
	// second, the scheme in lower case, the session in another key, the
	// session with a space before it.
	for name, md := range map[string][]string{
		"forged then real":  {"authorization", "Bearer forged", "authorization", "Bearer " + mine},
		"lower-case scheme": {"authorization", "bearer " + mine},
		"another key":       {"x-authorization", "Bearer " + mine},
		"a space before it": {"authorization", "Bearer  " + mine},
		"the session alone": {"authorization", mine + "x"},
	} {
		ctx := metadata.AppendToOutgoingContext(context.Background(), md...)
		if _, err := client.ListConsents(ctx, &consentv1.ListConsentsRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC list with %s: %v", name, err)
		}
	}
	g, err := client.Grant(as(mine), &consentv1.GrantRequest{To: "cnss", Service: grant.Service, Methods: []string{"IsAlive"}, Purpose: purpose, Ttl: durationpb.New(time.Hour), MaxUses: 2})
	if err != nil || g.GetToken() == "" {
		t.Fatalf("gRPC grant: %v", err)
	}
	if _, err := client.Grant(as(mine), &consentv1.GrantRequest{To: "cnss", Service: grant.Service, Purpose: purpose}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("gRPC grant without methods: %v", err)
	}
	l, err := client.ListConsents(as(mine), &consentv1.ListConsentsRequest{})
	if err != nil || len(l.GetConsents()) != 2 {
		t.Fatalf("gRPC list: %v %v", l, err)
	}
	if _, err := client.Revoke(as(theirs), &consentv1.RevokeRequest{Jti: g.GetJti()}); status.Code(err) != codes.NotFound {
		t.Fatalf("gRPC revoke of another's consent: %v", err)
	}
	r, err := client.Revoke(as(mine), &consentv1.RevokeRequest{Jti: g.GetJti()})
	if err != nil || !r.GetConsent().GetRevoked() {
		t.Fatalf("gRPC revoke: %v %v", r, err)
	}
}

// The citizen's direct grant and a revocation by gRPC are audited like the
// other actions, failing closed: a grant whose record is not durable is
// revoked and its token never released; a revocation whose record is not
// durable is not made.
func TestGrantAndGRPCRevokeAreAuditedFailingClosed(t *testing.T) {
	t.Parallel()
	f := start(t, 1)
	sessions, err := signin.New(signin.Config{Federation: f.env.Fed, Keyer: f.env.Keyer})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var records []*decision.Decision
	failing := false
	svc := &consent.Service{Backend: consent.NewClient(f.gwNC), Keys: f.pub, Federation: f.env.Fed, Log: slog.New(slog.DiscardHandler),
		Audit: func(_ context.Context, d *decision.Decision) error {
			mu.Lock()
			defer mu.Unlock()
			if failing {
				return errors.New("audit unavailable")
			}
			records = append(records, d)
			return nil
		}}
	setFailing := func(v bool) { mu.Lock(); failing = v; mu.Unlock() }
	recorded := func(method, jti string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, d := range records {
			if d.Method == method && d.TokenID == jti && d.CKey == f.env.Keyer.CKey(citizen) && d.Reason == consent.ReasonCitizenAction {
				n++
			}
		}
		return n
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	consent.NewGRPC(svc, sessions).Register(gs)
	go gs.Serve(lis)
	defer gs.Stop()
	cc, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer cc.Close()
	client := consentv1.NewConsentClient(cc)
	mine, _ := sessions.IssueSession(f.env.Keyer.CKey(citizen))
	as := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+mine)
	req := &consentv1.GrantRequest{To: "cnss", Service: f.env.Fed.Rules[0].Service, Methods: []string{"IsAlive"}, Purpose: purpose, Ttl: durationpb.New(time.Hour)}

	g, err := client.Grant(as, req)
	if err != nil || recorded(consent.ActionGrant, g.GetJti()) != 1 {
		t.Fatalf("grant: %v, %d records", err, recorded(consent.ActionGrant, g.GetJti()))
	}
	setFailing(true)
	if out, err := client.Grant(as, req); status.Code(err) != codes.Unavailable || out.GetToken() != "" {
		t.Fatalf("grant with the audit down: %v %v", out, err)
	}
	if _, err := client.Revoke(as, &consentv1.RevokeRequest{Jti: g.GetJti()}); status.Code(err) != codes.Unavailable {
		t.Fatalf("revoke with the audit down: %v", err)
	}
	setFailing(false)
	l, err := client.ListConsents(as, &consentv1.ListConsentsRequest{})
	if err != nil || len(l.GetConsents()) != 2 {
		t.Fatalf("list: %v %v", l, err)
	}
	for _, c := range l.GetConsents() {
		// The first stays in force (its revocation was not audited, so not
		// made); the second, minted while the audit was down, is revoked.
		if want := c.GetJti() != g.GetJti(); c.GetRevoked() != want {
			t.Fatalf("consent %s revoked %v, want %v", c.GetJti(), c.GetRevoked(), want)
		}
	}
	if _, err := client.Revoke(as, &consentv1.RevokeRequest{Jti: g.GetJti()}); err != nil || recorded(consent.ActionRevoke, g.GetJti()) != 1 {
		t.Fatalf("revoke: %v, %d records", err, recorded(consent.ActionRevoke, g.GetJti()))
	}
}
