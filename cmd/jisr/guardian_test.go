package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
	"github.com/jisr-bus/jisr/services/demodata"
)

// ageNow is c's age in whole years today (the gateway's clock, not the
// synthetic world's reference date).
func ageNow(c *demodata.Citizen) int {
	now := time.Now().UTC()
	a := now.Year() - c.Birth.Y
	if now.Before(time.Date(now.Year(), time.Month(c.Birth.M), c.Birth.D, 0, 0, 0, 0, time.UTC)) {
		a--
	}
	return a
}

// family finds, in the dev population, a living household head and a
// living child of theirs whose age satisfies ok, outside the households
// in skip.
func family(t *testing.T, n int, ok func(int) bool, skip ...string) (head, child demodata.Citizen) {
	t.Helper()
	for i := range demodata.Population(n) {
		c := demodata.Get(demodata.DefaultSeed, i)
		if c.Relation != demodata.Child || !c.Alive() || !ok(ageNow(&c)) || strings.Contains(strings.Join(skip, " "), c.Household) {
			continue
		}
		h := demodata.Get(demodata.DefaultSeed, c.Members[0])
		if h.Relation == demodata.Head && h.Alive() && h.Index != c.Index {
			return h, c
		}
	}
	t.Fatal("no such family in the dev population")
	return
}

// Assisted access, attacks first: a parent acts for their minor child on
// the citizen's API — the relation checked against the civil registry at
// each request, never taken from the browser — and every action records
// both the minor (ckey) and the parent (actor_ckey, assisted_by). Refused:
// the head of another family, a parent for their adult child, a relation
// forged in a form post, a cross-origin post, a bearer session without the
// sign-in's sealed eID, an empty or doubled ?for=.
func TestGuardianActsForMinor(t *testing.T) {
	parent, minor := family(t, 500, func(a int) bool { return a >= 1 && a <= 16 })
	other, _ := family(t, 500, func(a int) bool { return a <= 16 }, parent.Household)
	elder, adult := family(t, 500, func(a int) bool { return a >= 19 })
	f := startDevWith(t, nil, func(o *dev.Options) { o.SignInEIDs = []string{parent.EID, other.EID, elder.EID} })
	base, issuer := f.demo.Endpoints["gateway_http"], f.demo.Endpoints["oidc_issuer"]
	keyer, err := f.g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	minorCK, adultCK := keyer.CKey(minor.EID), keyer.CKey(adult.EID)
	parentCK, otherCK := keyer.CKey(parent.EID), keyer.CKey(other.EID)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()

	cnss := consentv1.NewConsentRequestsClient(f.dial(t, "cnss"))
	rr, err := cnss.RequestConsent(ctx, &consentv1.RequestConsentRequest{Eid: minor.EID, Service: "jisr.civilregistry.v1.CivilRegistry",
		Methods: []string{"GetPerson"}, Purpose: "amo-enrolment"})
	if err != nil {
		t.Fatalf("RequestConsent for the minor: %v", err)
	}
	id := rr.GetRequest().GetId()
	sf := &signinFed{base: base}
	same := []string{"Origin", base}
	forMinor := "?for=" + url.QueryEscape(minorCK)

	// The head of another family: nothing of the minor, read or change.
	oc := signInAt(t, base, issuer, other.EID)
	if code, out := sf.call(t, oc, "GET", "/v1/consent-requests"+forMinor, nil); code != 403 || out["requests"] != nil {
		t.Fatalf("another family's head lists the minor's requests: %d %v", code, out)
	}
	if code, _ := sf.call(t, oc, "POST", "/v1/consent-requests/"+id+"/reject"+forMinor, nil, same...); code != 403 {
		t.Fatalf("another family's head rejects for the minor: %d", code)
	}
	if code, _ := sf.call(t, oc, "GET", "/access-log/v1/accesses"+forMinor, nil); code == 200 {
		t.Fatalf("another family's head reads the minor's access log: %d", code)
	}

	// A parent for their adult child: not a minor, refused.
	ec := signInAt(t, base, issuer, elder.EID)
	if code, _ := sf.call(t, ec, "GET", "/v1/consent-requests?for="+url.QueryEscape(adultCK), nil); code != 403 {
		t.Fatalf("a parent acts for an adult child: %d", code)
	}
	if code, out := sf.call(t, ec, "GET", "/v1/wards", nil); code != 200 || strings.Contains(toJSON(out), adultCK) {
		t.Fatalf("an adult child among the wards: %d %v", code, out)
	}

	pc := signInAt(t, base, issuer, parent.EID)
	// The parent's wards, from the registry: the minor is one.
	if code, out := sf.call(t, pc, "GET", "/v1/wards", nil); code != 200 || !strings.Contains(toJSON(out), minorCK) {
		t.Fatalf("wards: %d %v", code, out)
	}
	// A relation forged in a form post: the body is never read for it; the
	// request acts for the signed-in parent, who has no such request.
	req, _ := http.NewRequest("POST", base+"/v1/consent-requests/"+id+"/reject",
		strings.NewReader(url.Values{"for": {minorCK}, "relation": {"guardian"}, "ckey": {minorCK}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	if resp, err := pc.Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("forged relation in a form post: %v %v", resp.Status, err)
	} else {
		resp.Body.Close()
	}
	// Cross-origin, an empty or doubled ?for=, a bearer session alone.
	if code, _ := sf.call(t, pc, "POST", "/v1/consent-requests/"+id+"/reject"+forMinor, nil, "Origin", "https://evil.example"); code != 403 {
		t.Fatalf("cross-origin reject for the minor: %d", code)
	}
	if code, _ := sf.call(t, pc, "GET", "/v1/consent-requests?for=", nil); code != 403 {
		t.Fatalf("empty for: %d", code)
	}
	if code, _ := sf.call(t, pc, "GET", "/v1/consent-requests"+forMinor+"&for="+url.QueryEscape(parentCK), nil); code != 403 {
		t.Fatalf("doubled for: %d", code)
	}
	if code, _ := sf.call(t, &http.Client{}, "GET", "/v1/consent-requests"+forMinor, nil, "Authorization", "Bearer "+sf.session(t, pc)); code != 401 {
		t.Fatalf("bearer session alone acts for the minor: %d", code)
	}

	// The parent, for the minor: the request, approve, pause, resume, revoke.
	code, list := sf.call(t, pc, "GET", "/v1/consent-requests"+forMinor, nil)
	if code != 200 || count(list["requests"]) != 1 {
		t.Fatalf("the minor's requests, as the parent: %d %v", code, list)
	}
	code, out := sf.call(t, pc, "POST", "/v1/consent-requests/"+id+"/approve"+forMinor, map[string]any{"fields": []string{"person.names"}}, same...)
	if code != 200 || out["state"] != "ACTIVE" {
		t.Fatalf("approve for the minor: %d %v", code, out)
	}
	st, err := getReq(ctx, cnss, minor.EID, id)
	if err != nil || st.GetState() != consentv1.ConsentState_CONSENT_STATE_ACTIVE || st.GetToken() == "" {
		t.Fatalf("CNSS sees: %v %v", st, err)
	}
	jti := st.GetJti()
	for _, step := range [][2]string{{"POST", "/v1/consents/" + jti + "/pause"}, {"POST", "/v1/consents/" + jti + "/resume"}, {"DELETE", "/v1/consents/" + jti}} {
		if code, out := sf.call(t, pc, step[0], step[1]+forMinor, nil, same...); code != 200 {
			t.Fatalf("%s %s for the minor: %d %v", step[0], step[1], code, out)
		}
	}
	if st, err := getReq(ctx, cnss, minor.EID, id); err != nil || st.GetState() != consentv1.ConsentState_CONSENT_STATE_REVOKED {
		t.Fatalf("after revoke: %v %v", st, err)
	}

	// The minor's audit trail, read by the parent: each action names the
	// minor and the parent; each check of the relation is there too, the
	// other family's refused ones included.
	bustest.Eventually(t, 20*time.Second, func() error {
		code, acc := sf.call(t, pc, "GET", "/access-log/v1/accesses"+forMinor+"&include_refused=true&page_size=100", nil)
		if code != 200 {
			return fmt.Errorf("the minor's access log as the parent: %d", code)
		}
		acted := map[string]bool{}
		refusedOther, checked := false, false
		list, _ := acc["accesses"].([]any)
		for _, a := range list {
			b, _ := base64.StdEncoding.DecodeString(a.(map[string]any)["record"].(string))
			var r auditv1.Record
			if err := proto.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.GetCkey() != minorCK {
				t.Fatalf("a record of someone else in the minor's log: %v", &r)
			}
			switch {
			case strings.HasPrefix(r.GetMethod(), "Citizen"):
				if r.GetActorCkey() != parentCK || r.GetAssistedBy() != "guardian" {
					t.Fatalf("%s without the parent as actor: %v", r.GetMethod(), &r)
				}
				acted[r.GetMethod()] = true
			case r.GetMethod() == "GetHousehold" && r.GetReason() == "GUARDIAN_NOT_ESTABLISHED":
				refusedOther = refusedOther || r.GetActorCkey() == otherCK
			case r.GetMethod() == "GetHousehold" && r.GetReason() == "ALLOWED":
				checked = checked || (r.GetActorCkey() == parentCK && r.GetPurpose() == "guardianship")
			}
		}
		for _, m := range []string{"CitizenApprove", "CitizenPause", "CitizenResume", "CitizenRevoke"} {
			if !acted[m] {
				return fmt.Errorf("no %s by the parent in the minor's log: %v", m, acted)
			}
		}
		if !refusedOther || !checked {
			return fmt.Errorf("guardianship checks in the minor's log: refused other family %v, parent's checked %v", refusedOther, checked)
		}
		return nil
	})
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
