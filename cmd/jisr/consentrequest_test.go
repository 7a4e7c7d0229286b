package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// A consumer asks a citizen for consent through its own adapter; the
// citizen approves fewer fields and a shorter duration on the gateway; the
// token reaches the consumer by its long poll; the call returns exactly the
// approved fields; a pause is enforced by the gateway, a resume lifts it, a
// revocation ends it — every state seen by the consumer. Another member can
// neither read the request nor get its token.
func TestConsentRequestLifecycle(t *testing.T) {
	f := startDev(t)
	base, issuer := f.demo.Endpoints["gateway_http"], f.demo.Endpoints["oidc_issuer"]
	eid := f.demo.Citizens[0].EID
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	cnss := consentv1.NewConsentRequestsClient(f.dial(t, "cnss"))
	person := civilv1.NewCivilRegistryClient(f.dial(t, "cnss"))

	// Refused: a rule that does not exist, a field the rule does not release.
	for _, bad := range []*consentv1.RequestConsentRequest{
		{Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"}, Purpose: "tax-clearance"},
		{Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"}, Purpose: "amo-enrolment", Fields: []string{"person.father_name"}},
		{Eid: "nope", Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"}, Purpose: "amo-enrolment"},
	} {
		if _, err := cnss.RequestConsent(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad request %v: %v", bad, err)
		}
	}
	asked := []string{"person.names", "person.birth", "person.sex"}
	reqResp, err := cnss.RequestConsent(ctx, &consentv1.RequestConsentRequest{
		Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"},
		Fields: asked, Purpose: "amo-enrolment", Duration: durationpb.New(72 * time.Hour),
	})
	if err != nil {
		t.Fatalf("RequestConsent: %v\n%s", err, f.logs.String())
	}
	req := reqResp.GetRequest()
	if req.GetState() != consentv1.ConsentState_CONSENT_STATE_PENDING || req.GetToken() != "" || req.GetId() == "" {
		t.Fatalf("new request: %v", req)
	}
	// Another member does not see it, even with the right eID and ID.
	if _, err := consentv1.NewConsentRequestsClient(f.dial(t, "tax")).GetConsentRequest(ctx, &consentv1.GetConsentRequestRequest{Eid: eid, Id: req.GetId()}); status.Code(err) != codes.NotFound {
		t.Fatalf("tax reads cnss's request: %v", err)
	}

	// The consumer follows the request with a long poll while the citizen decides.
	type result struct {
		r   *consentv1.ConsentRequest
		err error
	}
	active := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r, err := cnss.GetConsentRequest(wctx, &consentv1.GetConsentRequestRequest{Eid: eid, Id: req.GetId(),
			WaitWhile: consentv1.ConsentState_CONSENT_STATE_PENDING, Wait: durationpb.New(25 * time.Second)})
		active <- result{r.GetRequest(), err}
	}()

	c := signInAt(t, base, issuer, eid)
	sf := &signinFed{base: base}
	same := []string{"Origin", base} // the page's own origin, as a browser sends it
	code, list := sf.call(t, c, "GET", "/v1/consent-requests", nil)
	if code != 200 || count(list["requests"]) != 1 {
		t.Fatalf("citizen's requests: %d %v", code, list)
	}
	// The citizen previews the actual values: exactly the fields asked, and
	// the preview itself is audited under the citizen's own purpose.
	code, pv := sf.call(t, c, "POST", "/v1/consent-requests/"+req.GetId()+"/preview", nil, same...)
	vals, _ := pv["values"].(map[string]any)
	pp, _ := vals["person"].(map[string]any)
	if code != 200 || pp["names"] == nil || pp["birth"] == nil || pp["father_name"] != nil || pp["eid"] != nil {
		t.Fatalf("preview: %d %v", code, pv)
	}
	if code, _ := sf.call(t, c, "POST", "/v1/consent-requests/"+req.GetId()+"/preview", nil, "Origin", "https://evil.example"); code != 403 {
		t.Fatalf("cross-origin preview: %d", code)
	}
	// A bearer session alone (no sealed eID of the sign-in) gets no preview.
	if code, _ := sf.call(t, &http.Client{}, "POST", "/v1/consent-requests/"+req.GetId()+"/preview", nil, "Authorization", "Bearer "+sf.session(t, c)); code != 401 {
		t.Fatalf("preview with a bearer session only: %d", code)
	}

	// A cross-origin approval is refused; fields not asked for and a longer duration too.
	if code, _ := sf.call(t, c, "POST", "/v1/consent-requests/"+req.GetId()+"/approve", map[string]any{}, "Origin", "https://evil.example"); code != 403 {
		t.Fatalf("cross-origin approve: %d", code)
	}
	if code, _ := sf.call(t, c, "POST", "/v1/consent-requests/"+req.GetId()+"/approve", map[string]any{"fields": []string{"person.marital_status"}}, same...); code != 400 {
		t.Fatalf("approve a field not asked for: %d", code)
	}
	if code, _ := sf.call(t, c, "POST", "/v1/consent-requests/"+req.GetId()+"/approve", map[string]any{"ttl": "100h"}, same...); code != 400 {
		t.Fatalf("approve longer than asked: %d", code)
	}
	code, out := sf.call(t, c, "POST", "/v1/consent-requests/"+req.GetId()+"/approve", map[string]any{"fields": []string{"person.names"}, "ttl": "24h"}, same...)
	if code != 200 || out["state"] != "ACTIVE" || out["token"] != nil {
		t.Fatalf("approve: %d %v", code, out)
	}
	if code, _ := sf.call(t, c, "POST", "/v1/consent-requests/"+req.GetId()+"/reject", nil, same...); code != 409 {
		t.Fatalf("reject after approve: %d", code)
	}
	res := <-active
	if res.err != nil || res.r.GetState() != consentv1.ConsentState_CONSENT_STATE_ACTIVE || res.r.GetToken() == "" ||
		!slices.Equal(res.r.GetFields(), []string{"person.names"}) {
		t.Fatalf("the consumer's long poll: %v %v", res.r, res.err)
	}
	if left := time.Until(res.r.GetExpires().AsTime()); left > 24*time.Hour+time.Minute || left < 23*time.Hour {
		t.Fatalf("expiry %v", res.r.GetExpires().AsTime())
	}
	tok := res.r.GetToken()
	md := func() context.Context {
		return metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", "amo-enrolment", "jisr-consent", tok))
	}
	p, err := person.GetPerson(md(), &civilv1.GetPersonRequest{Eid: eid})
	if err != nil {
		t.Fatalf("GetPerson with the approved token: %v", err)
	}
	if p.GetPerson().GetNames() == nil || p.GetPerson().GetBirth() != nil || p.GetPerson().GetSex() != 0 || p.GetPerson().GetEid() != "" {
		t.Fatalf("released more or less than person.names: %v", p)
	}

	// Pause: the gateway refuses the token; resume: accepted again.
	jti := res.r.GetJti()
	if code, out := sf.call(t, c, "POST", "/v1/consents/"+jti+"/pause", nil, same...); code != 200 || out["paused"] != true {
		t.Fatalf("pause: %d %v", code, out)
	}
	refusedWith := func(reason string) error {
		_, err := person.GetPerson(md(), &civilv1.GetPersonRequest{Eid: eid})
		if got := decision.ReasonOf(status.Convert(err)); got != reason {
			return fmt.Errorf("GetPerson: %v (reason %q, want %q)", err, got, reason)
		}
		return nil
	}
	bustest.Eventually(t, 10*time.Second, func() error { return refusedWith("CONSENT_PAUSED") })
	st, err := getReq(ctx, cnss, eid, req.GetId())
	if err != nil || st.GetState() != consentv1.ConsentState_CONSENT_STATE_PAUSED {
		t.Fatalf("state after pause: %v %v", st, err)
	}
	if code, _ := sf.call(t, c, "POST", "/v1/consents/"+jti+"/resume", nil, same...); code != 200 {
		t.Fatalf("resume: %d", code)
	}
	bustest.Eventually(t, 10*time.Second, func() error {
		_, err := person.GetPerson(md(), &civilv1.GetPersonRequest{Eid: eid})
		return err
	})
	if code, _ := sf.call(t, c, "DELETE", "/v1/consents/"+jti, nil, same...); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	bustest.Eventually(t, 10*time.Second, func() error { return refusedWith("CONSENT_REVOKED") })
	st, err = getReq(ctx, cnss, eid, req.GetId())
	if err != nil || st.GetState() != consentv1.ConsentState_CONSENT_STATE_REVOKED {
		t.Fatalf("state after revoke: %v %v", st, err)
	}
	if code, _ := sf.call(t, c, "POST", "/v1/consents/"+jti+"/resume", nil, same...); code != 400 {
		t.Fatalf("resume after revoke: %d", code)
	}

	// A second request, rejected: the consumer sees REJECTED and no token.
	req2r, err := cnss.RequestConsent(ctx, &consentv1.RequestConsentRequest{Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry",
		Methods: []string{"GetPerson"}, Purpose: "family-allowance"})
	if err != nil {
		t.Fatal(err)
	}
	req2 := req2r.GetRequest()
	if code, _ := sf.call(t, c, "POST", "/v1/consent-requests/"+req2.GetId()+"/reject", nil, same...); code != 200 {
		t.Fatalf("reject: %d", code)
	}
	st, err = getReq(ctx, cnss, eid, req2.GetId())
	if err != nil || st.GetState() != consentv1.ConsentState_CONSENT_STATE_REJECTED || st.GetToken() != "" {
		t.Fatalf("rejected: %v %v", st, err)
	}

	// One use only, and two seconds: CNSS's one call uses the first up, the
	// second's time passes; CNSS's follow sees both, and the consent
	// service stores and audits both in its own log.
	follow := func(id string, while consentv1.ConsentState) *consentv1.ConsentRequest {
		t.Helper()
		r, err := cnss.GetConsentRequest(ctx, &consentv1.GetConsentRequestRequest{Eid: eid, Id: id, WaitWhile: while, Wait: durationpb.New(25 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetRequest()
	}
	approved := func(maxUses int32, d time.Duration) *consentv1.ConsentRequest {
		t.Helper()
		r, err := cnss.RequestConsent(ctx, &consentv1.RequestConsentRequest{Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry",
			Methods: []string{"GetPerson"}, Fields: []string{"person.names"}, Purpose: "amo-enrolment", Duration: durationpb.New(d), MaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		if code, out := sf.call(t, c, "POST", "/v1/consent-requests/"+r.GetRequest().GetId()+"/approve", map[string]any{}, same...); code != 200 {
			t.Fatalf("approve: %d %v", code, out)
		}
		return follow(r.GetRequest().GetId(), consentv1.ConsentState_CONSENT_STATE_PENDING)
	}
	once := approved(1, time.Hour)
	tok = once.GetToken()
	if _, err := person.GetPerson(md(), &civilv1.GetPersonRequest{Eid: eid}); err != nil {
		t.Fatalf("the one use: %v", err)
	}
	if st := follow(once.GetId(), consentv1.ConsentState_CONSENT_STATE_ACTIVE); st.GetState() != consentv1.ConsentState_CONSENT_STATE_USED_UP {
		t.Fatalf("CNSS sees %v after the last use", st.GetState())
	}
	if err := refusedWith("CONSENT_USED_UP"); err != nil {
		t.Fatal(err)
	}
	short := approved(0, 2*time.Second)
	if st := follow(short.GetId(), consentv1.ConsentState_CONSENT_STATE_ACTIVE); st.GetState() != consentv1.ConsentState_CONSENT_STATE_EXPIRED {
		t.Fatalf("CNSS sees %v after the expiry", st.GetState())
	}

	// The citizen is notified of CNSS's access (the dev notifier is the log).
	bustest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(f.logs.String(), `msg="citizen notified of an access"`) ||
			!strings.Contains(f.logs.String(), "method=GetPerson purpose=amo-enrolment") {
			return errors.New("no notification of the access in the log")
		}
		return nil
	})

	// Every step is in the citizen's audit trail: the consumer's requests
	// and the citizen's own actions (indexed as they are committed: wait).
	bustest.Eventually(t, 20*time.Second, func() error {
		code, acc := sf.call(t, c, "GET", "/access-log/v1/accesses?include_refused=true&page_size=100", nil)
		if code != 200 {
			return fmt.Errorf("access log: %d", code)
		}
		methods := map[string]bool{}
		previewed := false
		for _, a := range acc["accesses"].([]any) {
			if m, ok := a.(map[string]any)["method"].(string); ok {
				methods[m] = true
			}
			previewed = previewed || a.(map[string]any)["purpose"] == "citizen"
		}
		if !previewed {
			return errors.New("the citizen's preview is not in their audit trail")
		}
		for _, m := range []string{"RequestConsent", "GetConsentRequest", "CitizenApprove", "CitizenPause", "CitizenResume", "CitizenRevoke", "CitizenReject", "GetPerson",
			"ConsentUsedUp", "ConsentExpired"} {
			if !methods[m] {
				return fmt.Errorf("no %s in the citizen's audit trail: %v", m, methods)
			}
		}
		return nil
	})
	// Every log verifies: the gateway's and the consent service's.
	vout, _, err := f.cliAudit(t, "audit", "verify")
	if err != nil || !strings.Contains(vout, "OK:") || !regexp.MustCompile(`(?m)^consent +[1-9][0-9]* .* ok$`).MatchString(vout) {
		t.Fatalf("audit verify: %v\n%s", err, vout)
	}
}

func getReq(ctx context.Context, c consentv1.ConsentRequestsClient, eid, id string) (*consentv1.ConsentRequest, error) {
	r, err := c.GetConsentRequest(ctx, &consentv1.GetConsentRequestRequest{Eid: eid, Id: id})
	return r.GetRequest(), err
}
