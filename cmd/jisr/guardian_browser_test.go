//go:build browser

package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jisr-bus/jisr/cmd/internal/browsertest"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
	"github.com/jisr-bus/jisr/services/demodata"
)

// guardianStep: a parent signs in, picks their minor child in "act for"
// (the list comes from the civil registry), sees the child's pending
// request and approves it; CNSS gets the token. In French.
func guardianStep(t *testing.T, f *devFixture, parent, minor demodata.Citizen) {
	base := f.demo.Endpoints["gateway_http"]
	ctx0, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	keyer, err := f.g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	minorCK := keyer.CKey(demodata.NormaliseEID(minor.EID))
	cnss := consentv1.NewConsentRequestsClient(f.dial(t, "cnss"))
	rr, err := cnss.RequestConsent(ctx0, &consentv1.RequestConsentRequest{Eid: minor.EID, Service: "jisr.civilregistry.v1.CivilRegistry",
		Methods: []string{"GetPerson"}, Fields: []string{"person.names"}, Purpose: "amo-enrolment"})
	if err != nil {
		t.Fatal(err)
	}
	id := rr.GetRequest().GetId()
	ctx := browsertest.New(t, browsertest.Options{AcceptLanguage: "fr-MA,fr;q=0.9"})
	run := func(what string, a ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a...); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
			t.Fatalf("%s: %v\npage:\n%s", what, err, html)
		}
	}
	run("sign in", chromedp.Navigate(base+"/citizen/"), chromedp.Click(chromedp.ID("signin"), chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(fmt.Sprintf("button[name=eid][value=%q]", parent.EID)), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.ID("acting")),
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector('#actfor option[value=%q]')`, minorCK), chromedp.WithPollingTimeout(45*time.Second)))
	if bad, _ := chromedp.Run(ctx, chromedp.Evaluate[string](a11yCheck)); bad != "" {
		t.Errorf("accessibility with the act-for choice:\n%s", bad)
	}
	run("act for the minor", chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
		`(() => { const s = document.getElementById("actfor"); s.value = %q; s.dispatchEvent(new Event("change")); })()`, minorCK)))
	form := fmt.Sprintf("form[data-request=%q]", id)
	run("the minor's pending request", chromedp.WaitVisible(chromedp.CSS(form)))
	browsertest.Screenshot(t, ctx, "citizen-fr-7-guardian")
	run("approve for the minor", chromedp.Click(chromedp.CSS(form+" button[data-action=approve]"), chromedp.NodeVisible),
		chromedp.Poll[chromedp.Void](`document.querySelector("#consents li[data-state=ACTIVE]")`, chromedp.WithPollingTimeout(45*time.Second)))
	st, err := getReq(ctx0, cnss, minor.EID, id)
	if err != nil || st.GetState() != consentv1.ConsentState_CONSENT_STATE_ACTIVE || st.GetToken() == "" {
		t.Fatalf("CNSS sees %v %v", st, err)
	}
}
