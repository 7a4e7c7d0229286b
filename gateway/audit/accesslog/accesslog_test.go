package accesslog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/accesslog"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/audit/tree"
	"github.com/jisr-bus/jisr/gateway/citizen"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

const (
	td    = "jisr.internal"
	alice = "AB123456"
	bob   = "CD654321"
)

var t0 = time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)

type harness struct {
	env   *bustest.Env
	url   string
	keys  *checkpoint.Keys
	svc   *accesslog.Service
	now   time.Time
	grpc  *grpc.ClientConn
	auth  *citizen.Auth
	total int
}

// newHarness stores a small history for alice and bob, indexes it, and
// serves the access log over HTTP/1.1 and h2c on a loopback port.
func newHarness(t *testing.T) *harness {
	t.Helper()
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	logger := bustest.Logger(t)
	keyDir := t.TempDir()
	kp, _, err := checkpoint.EnsureKey(keyDir, "gw-1", checkpoint.Origin(td, "gw-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsstate.Init(ctx, env.Connect(t, "operator"), stream.Config{}); err != nil {
		t.Fatal(err)
	}
	gw := env.Connect(t, "gateway")
	l, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: "gw-1", Key: kp}, audit.WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	a, b := env.Keyer.CKey(alice), env.Keyer.CKey(bob)
	decisions := []*decision.Decision{
		{Time: t0, Consumer: "cnss", Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry", Method: "GetPerson", CKey: a,
			Purpose: "amo-enrolment", LegalBasis: "consent", Rule: "cnss-civil-status", Allowed: true, Reason: "ALLOWED", Fields: []string{"person.names", "person.birth"}},
		{Time: t0.Add(time.Hour), Consumer: "health", Provider: "cnss", Service: "jisr.cnss.v1.SocialSecurity", Method: "IsInsured", CKey: a,
			Purpose: "care-eligibility", LegalBasis: "explicit_request", Allowed: true, Reason: "ALLOWED"},
		{Time: t0.Add(2 * time.Hour), Consumer: "cnss", Provider: "tax", Service: "jisr.tax.v1.Tax", Method: "IsIncomeBelow", CKey: a,
			Purpose: "amo-enrolment", LegalBasis: "consent", Allowed: false, Reason: "CONSENT_EXPIRED", Code: codes.Unauthenticated},
		{Time: t0.Add(3 * time.Hour), Consumer: "tax", Provider: "cnss", Service: "jisr.cnss.v1.SocialSecurity", Method: "GetContributions", CKey: a,
			Purpose: "income-verification", LegalBasis: "mandate", Law: "Code général des impôts, art. 214", Allowed: true, Reason: "ALLOWED",
			VisibleAt: t0.Add(3*time.Hour + 720*time.Hour)},
		{Time: t0.Add(4 * time.Hour), Consumer: "cnss", Provider: "civil-registry", Service: "jisr.civilregistry.v1.CivilRegistry", Method: "IsAlive", CKey: b,
			Purpose: "pension-continuity", LegalBasis: "mandate", Law: "Dahir n° 1-72-184, art. 53", Allowed: true, Reason: "ALLOWED"},
	}
	for i := range 7 { // more of alice's, to page through
		decisions = append(decisions, &decision.Decision{Time: t0.Add(time.Duration(5+i) * time.Hour), Consumer: "cnss", Provider: "health",
			Service: "jisr.health.v1.Health", Method: "HasDisability", CKey: a, Purpose: "disability-allowance", LegalBasis: "consent", Allowed: true, Reason: "ALLOWED"})
	}
	for _, d := range decisions {
		if err := l.Append(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(ctx); err != nil { // publishes the checkpoint
		t.Fatal(err)
	}

	keys, err := checkpoint.LoadPublicKeys(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(gw)
	records, _ := js.Stream(ctx, subject.AuditStream)
	ckpts, _ := js.Stream(ctx, subject.CheckpointStream)
	store, err := index.OpenStore(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	ix := index.New(store, records, ckpts, td, keys, logger)
	ictx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { ix.Run(ictx); close(done) }()
	t.Cleanup(func() { stop(); <-done; store.Close() })
	if _, err := ix.WaitFor(ctx, "gw-1", uint64(len(decisions))); err != nil {
		t.Fatal(err)
	}

	h := &harness{env: env, keys: keys, now: t0.Add(24 * time.Hour), total: len(decisions)}
	h.auth, err = citizen.New(citizen.Config{Federation: env.Fed, Keyer: env.Keyer, DemoLogin: true, Log: logger})
	if err != nil {
		t.Fatal(err)
	}
	h.svc, err = accesslog.New(accesslog.Config{
		Federation: env.Fed, Records: records, Index: ix, Keys: keys, Auth: h.auth, Log: logger,
		Now: func() time.Time { return h.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, handler := range h.svc.Routes() {
		mux.Handle(p, handler)
	}
	for p, handler := range h.auth.Routes() {
		mux.Handle(p, handler)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	h.url = "http://" + lis.Addr().String()
	h.grpc, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.grpc.Close() })
	return h
}

// client signs in with eid through the demo login and returns a client
// carrying the session cookie.
func (h *harness) client(t *testing.T, eid string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := c.Post(h.url+"/access-log/login", "application/json", strings.NewReader(`{"eid":"`+eid+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("login: %s %s", resp.Status, b)
	}
	return c
}

func (h *harness) list(t *testing.T, c *http.Client, query string) (*auditv1.ListAccessesResponse, int) {
	t.Helper()
	resp, err := c.Get(h.url + "/access-log/v1/accesses" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode
	}
	out := &auditv1.ListAccessesResponse{}
	if err := protojson.Unmarshal(b, out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return out, resp.StatusCode
}

// checkProof does what the citizen's page does: the record's hash, the
// audit path, and the checkpoint's signature with the published keys.
func (h *harness) checkProof(t *testing.T, a *auditv1.Access) {
	t.Helper()
	p := a.GetProof()
	if p == nil {
		t.Fatalf("no proof for the access at %s", a.GetTime().AsTime())
	}
	c, err := checkpoint.Open(p.GetCheckpoint(), h.keys.Verifiers())
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.VerifyInclusion(p.GetLeafIndex(), c.Size, tree.LeafHash(a.GetRecord()), p.GetHashes(), c.Root); err != nil {
		t.Fatalf("proof of leaf %d: %v", p.GetLeafIndex(), err)
	}
}

func TestCitizenSeesTheirOwnAccessesNewestFirstWithProofs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := h.client(t, " ab123456 ") // normalised like the federation's eIDs
	got, code := h.list(t, c, "")
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	// 9 allowed accesses of alice's; the refused one and the delayed mandate are not shown.
	if n := len(got.GetAccesses()); n != 9 {
		t.Fatalf("%d accesses, want 9", n)
	}
	for i, a := range got.GetAccesses() {
		if i > 0 && a.GetTime().AsTime().After(got.GetAccesses()[i-1].GetTime().AsTime()) {
			t.Fatal("not newest first")
		}
		rec, err := record.Parse(a.GetRecord())
		if err != nil || rec.GetCkey() != h.env.Keyer.CKey(alice) {
			t.Fatal("an access that is not alice's")
		}
		if a.GetPurpose() == "income-verification" {
			t.Fatal("a delayed mandate access shown before its time")
		}
		h.checkProof(t, a)
	}
	first := got.GetAccesses()[len(got.GetAccesses())-1]
	if first.GetConsumer().GetTitle() != "Social security fund (CNSS)" || first.GetProvider().GetName() != "civil-registry" ||
		strings.Join(first.GetFields(), ",") != "person.names,person.birth" || first.GetLegalBasis() != "consent" {
		t.Fatalf("oldest access %v", first)
	}

	// With refused queries.
	got, _ = h.list(t, c, "?include_refused=true")
	if n := len(got.GetAccesses()); n != 10 {
		t.Fatalf("%d accesses with refused ones, want 10", n)
	}
	// Once the law's delay is over, the mandate appears, with its law.
	h.now = t0.Add(800 * time.Hour)
	got, _ = h.list(t, c, "")
	found := false
	for _, a := range got.GetAccesses() {
		if a.GetPurpose() == "income-verification" {
			found = a.GetLaw() == "Code général des impôts, art. 214" && a.GetLegalBasis() == "mandate"
		}
	}
	if !found {
		t.Fatal("the delayed mandate access (with its law) does not appear after its delay")
	}

	// Bob sees only bob's.
	got, _ = h.list(t, h.client(t, bob), "")
	if n := len(got.GetAccesses()); n != 1 || got.GetAccesses()[0].GetMethod() != "IsAlive" {
		t.Fatalf("bob sees %d accesses", n)
	}
}

func TestPagesCoverEverythingOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	c := h.client(t, alice)
	seen := map[string]bool{}
	token := ""
	pages := 0
	for {
		q := "?page_size=4&include_refused=true"
		if token != "" {
			q += "&page_token=" + token
		}
		got, code := h.list(t, c, q)
		if code != http.StatusOK {
			t.Fatalf("status %d", code)
		}
		pages++
		for _, a := range got.GetAccesses() {
			k := string(a.GetRecord())
			if seen[k] {
				t.Fatal("an access on two pages")
			}
			seen[k] = true
		}
		if token = got.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(seen) != 10 || pages != 3 {
		t.Fatalf("%d accesses on %d pages", len(seen), pages)
	}
	for _, q := range []string{"?page_token=bm9wZQ", "?page_size=-1", "?page_size=100000", "?page_size=x"} {
		if _, code := h.list(t, c, q); code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", q, code)
		}
	}
}

func TestAccessLogNeedsASignedInCitizen(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	plain := &http.Client{Timeout: 10 * time.Second}
	if _, code := h.list(t, plain, ""); code != http.StatusUnauthorized {
		t.Fatalf("no session: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, h.url+"/access-log/v1/accesses", nil)
	req.Header.Set("Authorization", "Bearer forged.token")
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token: %d", resp.StatusCode)
	}
	// A session ID of the right shape that the server never issued.
	tok, _ := h.auth.IssueSession(h.env.Keyer.CKey(alice))
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("A", len(tok)))
	resp, err = plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown session ID: %d", resp.StatusCode)
	}
	// A malformed eID is refused without being echoed.
	resp, err = plain.Post(h.url+"/access-log/login", "application/x-www-form-urlencoded", strings.NewReader("eid=NOT-AN-EID-42"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || bytes.Contains(b, []byte("NOT-AN-EID")) {
		t.Fatalf("bad eID: %d %s", resp.StatusCode, b)
	}
	// Signing out ends the session for the browser.
	c := h.client(t, alice)
	resp, err = c.Post(h.url+"/access-log/logout", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, code := h.list(t, c, ""); code != http.StatusUnauthorized {
		t.Fatalf("after sign-out: %d", code)
	}
}

func TestGRPCAccessLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	client := auditv1.NewAccessLogClient(h.grpc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := client.ListAccesses(ctx, &auditv1.ListAccessesRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without a session: %v", err)
	}
	tok, _ := h.auth.IssueSession(h.env.Keyer.CKey(alice))
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	resp, err := client.ListAccesses(actx, &auditv1.ListAccessesRequest{PageSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetAccesses()) != 5 || resp.GetNextPageToken() == "" {
		t.Fatalf("%d accesses, next %q", len(resp.GetAccesses()), resp.GetNextPageToken())
	}
	h.checkProof(t, resp.GetAccesses()[0])
	if _, err := client.ListAccesses(actx, &auditv1.ListAccessesRequest{PageToken: "!!"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad page token: %v", err)
	}
	keys, err := client.GetLogKeys(ctx, &auditv1.GetLogKeysRequest{})
	if err != nil || len(keys.GetKeys()) != 1 || !strings.HasPrefix(keys.GetKeys()[0], "jisr.internal/audit/gw-1+") {
		t.Fatalf("keys %v %v", keys, err)
	}
}

func TestPageAndKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	resp, err := http.Get(h.url + "/access-log/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("Who looked at my data?")) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("page: %d", resp.StatusCode)
	}
	resp, err = http.Get(h.url + "/access-log/v1/keys")
	if err != nil {
		t.Fatal(err)
	}
	var keys struct{ Keys []string }
	_ = json.NewDecoder(resp.Body).Decode(&keys)
	resp.Body.Close()
	if len(keys.Keys) != 1 {
		t.Fatalf("keys %v", keys)
	}
}
