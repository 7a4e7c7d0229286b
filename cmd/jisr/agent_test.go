package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/gateway/citizen"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
	"github.com/jisr-bus/jisr/services/demodata"
)

// signInOn signs eid in through the embedded provider in the browser c
// (its cookies kept: the session it already holds is the one replaced).
func signInOn(t *testing.T, c *http.Client, base, issuer, eid string) {
	t.Helper()
	resp, err := c.Get(base + citizen.PathLogin)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := idpRequestField.FindSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("provider page: %s %s", resp.Status, page)
	}
	resp, err = c.PostForm(issuer+"/login", url.Values{"request": {string(m[1])}, "eid": {eid}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/access-log/" || !bytes.Contains(b, []byte("Who looked at my data?")) {
		t.Fatalf("after sign-in: %s %s", resp.Status, resp.Request.URL)
	}
}

// A counter agent acts only with the citizen present: the agent's own
// sign-in sees nothing (the citizen's requests, consents, access log, the
// wards of a household); once the citizen signs in, themselves, in the
// same browser, the session serves the citizen and every action's record
// names the agent (actor_ckey, assisted_by "agent"). Signing out ends
// both: the agent signs in again for the next citizen.
func TestCounterAgentNeedsCitizen(t *testing.T) {
	agent := demodata.Get(demodata.DefaultSeed, 7)
	f := startDevWith(t, nil, func(o *dev.Options) { o.AgentEIDs = []string{agent.EID} })
	base, issuer := f.demo.Endpoints["gateway_http"], f.demo.Endpoints["oidc_issuer"]
	keyer, err := f.g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	eid := f.demo.Citizens[0].EID
	agentCK := keyer.CKey(demodata.NormaliseEID(agent.EID))
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	cnss := consentv1.NewConsentRequestsClient(f.dial(t, "cnss"))
	rr, err := cnss.RequestConsent(ctx, &consentv1.RequestConsentRequest{Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry",
		Methods: []string{"GetPerson"}, Purpose: "amo-enrolment"})
	if err != nil {
		t.Fatal(err)
	}
	id := rr.GetRequest().GetId()
	sf := &signinFed{base: base}
	same := []string{"Origin", base}

	// The agent alone: nothing, by cookie or by bearer.
	ac := signInAt(t, base, issuer, agent.EID)
	for _, p := range []string{"/v1/consent-requests", "/v1/consents", "/access-log/v1/accesses", "/v1/wards"} {
		if code, out := sf.call(t, ac, "GET", p, nil); code != 401 {
			t.Fatalf("the agent alone reads %s: %d %v", p, code, out)
		}
	}
	if code, _ := sf.call(t, ac, "POST", "/v1/consent-requests/"+id+"/approve", map[string]any{}, same...); code != 401 {
		t.Fatalf("the agent alone approves: %d", code)
	}
	if code, _ := sf.call(t, &http.Client{}, "GET", "/v1/consent-requests", nil, "Authorization", "Bearer "+sf.session(t, ac)); code != 401 {
		t.Fatalf("the agent's bearer alone: %d", code)
	}
	if code, out := sf.call(t, ac, "GET", citizen.PathSession, nil); code != 200 || out["agent_waiting"] != true || out["signed_in"] != false {
		t.Fatalf("session info of the agent alone: %d %v", code, out)
	}
	// The agent signing in again is still alone.
	signInOn(t, ac, base, issuer, agent.EID)
	if code, _ := sf.call(t, ac, "GET", "/v1/consent-requests", nil); code != 401 {
		t.Fatalf("the agent signed in twice reads: %d", code)
	}

	// The citizen signs in, themselves, on the agent's browser.
	signInOn(t, ac, base, issuer, eid)
	if code, out := sf.call(t, ac, "GET", citizen.PathSession, nil); code != 200 || out["assisted"] != true {
		t.Fatalf("session info, assisted: %d %v", code, out)
	}
	if code, list := sf.call(t, ac, "GET", "/v1/consent-requests", nil); code != 200 || count(list["requests"]) != 1 {
		t.Fatalf("assisted citizen's requests: %d %v", code, list)
	}
	if code, _ := sf.call(t, ac, "POST", "/v1/consent-requests/"+id+"/approve", map[string]any{}, "Origin", "https://evil.example"); code != 403 {
		t.Fatalf("cross-origin approve, assisted: %d", code)
	}
	if code, out := sf.call(t, ac, "POST", "/v1/consent-requests/"+id+"/approve", map[string]any{"fields": []string{"person.names"}}, same...); code != 200 || out["state"] != "ACTIVE" {
		t.Fatalf("approve, assisted: %d %v", code, out)
	}
	bustest.Eventually(t, 20*time.Second, func() error {
		code, acc := sf.call(t, ac, "GET", "/access-log/v1/accesses?include_refused=true&page_size=100", nil)
		if code != 200 {
			return fmt.Errorf("access log, assisted: %d", code)
		}
		list, _ := acc["accesses"].([]any)
		for _, a := range list {
			b, _ := base64.StdEncoding.DecodeString(a.(map[string]any)["record"].(string))
			var r auditv1.Record
			if err := proto.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if r.GetMethod() == "CitizenApprove" {
				if r.GetActorCkey() != agentCK || r.GetAssistedBy() != "agent" {
					t.Fatalf("the approval does not name the agent: %v", &r)
				}
				return nil
			}
		}
		return fmt.Errorf("no approval in the citizen's log yet (%d records)", len(list))
	})

	// Signing out ends the assisted session; the agent is not signed in either.
	if code, _ := sf.call(t, ac, "POST", citizen.PathLogout, nil, same...); code != 204 {
		t.Fatalf("logout: %d", code)
	}
	if code, _ := sf.call(t, ac, "GET", "/v1/consent-requests", nil); code != 401 {
		t.Fatalf("after logout: %d", code)
	}
	// A citizen signing in on an ordinary session is not assisted.
	cc := signInAt(t, base, issuer, eid)
	signInOn(t, cc, base, issuer, eid)
	if code, out := sf.call(t, cc, "GET", citizen.PathSession, nil); code != 200 || out["assisted"] != false {
		t.Fatalf("an ordinary session is assisted: %d %v", code, out)
	}
}
