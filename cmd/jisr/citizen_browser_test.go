//go:build browser

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/browsertest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// englishWords may not appear as words on the French or Arabic page.
var englishWords = []string{"the", "and", "sign", "consent", "request", "requests", "access", "approve", "reject", "pause",
	"paused", "resume", "revoke", "revoked", "pending", "data", "who", "when", "purpose", "legal", "basis", "proof", "log",
	"live", "error", "allowed", "refused", "active", "fields", "person", "names", "enrolment", "whole", "answer", "until"}

// The citizen's whole journey in a real browser, in French and in Arabic:
// CNSS's backend asks through its adapter; the citizen signs in through the
// embedded OpenID provider, previews, approves fewer fields; the token
// reaches CNSS; CNSS's call returns exactly those fields; the access shows
// up live with its proof checked in the browser; a pause makes the gateway
// refuse CNSS; the citizen revokes. Screenshots of each step go to
// browsertest.Dir (var/screenshots).
func TestCitizenJourneyInTheBrowser(t *testing.T) {
	parent, minor := family(t, 500, func(a int) bool { return a >= 1 && a <= 16 })
	f := startDevWith(t, nil, func(o *dev.Options) { o.SignInEIDs = []string{parent.EID} })
	for i, lang := range []struct{ code, accept, dir string }{
		{"fr", "fr-MA,fr;q=0.9", "ltr"},
		{"ar", "ar-MA,ar;q=0.9", "rtl"},
	} {
		t.Run(lang.code, func(t *testing.T) {
			journey(t, f, f.demo.Citizens[i+1].EID, lang.code, lang.accept, lang.dir)
		})
	}
	// Assisted access: a parent acts for their minor child (docs/citizen.md).
	t.Run("guardian", func(t *testing.T) { guardianStep(t, f, parent, minor) })
}

func journey(t *testing.T, f *devFixture, eid, lang, accept, dir string) {
	base, ctx0 := f.demo.Endpoints["gateway_http"], t.Context()
	ctx0, cancel := context.WithTimeout(ctx0, 3*time.Minute)
	defer cancel()
	cnss := consentv1.NewConsentRequestsClient(f.dial(t, "cnss"))
	person := civilv1.NewCivilRegistryClient(f.dial(t, "cnss"))
	shot := func(ctx context.Context, step string) { browsertest.Screenshot(t, ctx, "citizen-"+lang+"-"+step) }
	do := func(ctx context.Context, what string, a ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	wait := func(ctx context.Context, what, js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(45*time.Second))); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body.innerText"))
			t.Fatalf("%s: %v\npage:\n%s", what, err, html)
		}
	}
	eval := func(ctx context.Context, js string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return s
	}
	noEnglish := func(ctx context.Context, where string) {
		t.Helper()
		text := eval(ctx, "document.title + '\\n' + document.body.innerText")
		words := strings.FieldsFunc(strings.ToLower(text), func(r rune) bool { return !unicode.IsLetter(r) })
		for _, w := range englishWords {
			if slices.Contains(words, w) {
				t.Errorf("%s: the English word %q is on the %s page:\n%s", where, w, lang, text)
			}
		}
		if strings.Contains(text, "Get") || strings.Contains(text, "CONSENT_") || strings.Contains(text, "DECISION_") {
			t.Errorf("%s: a method or code name is on the page:\n%s", where, text)
		}
	}

	// WCAG 2.1 AA, the points a script can check: text contrast ≥ 4.5:1
	// against the nearest opaque background, every form control labelled,
	// no positive tabindex (keyboard order is the DOM's), nothing hidden
	// from screen readers only.
	accessible := func(ctx context.Context, where string) {
		t.Helper()
		if bad := eval(ctx, a11yCheck); bad != "" {
			t.Errorf("%s (%s): accessibility:\n%s", where, lang, bad)
		}
	}

	// 1. CNSS's backend asks through its adapter, and follows the request.
	reqResp, err := cnss.RequestConsent(ctx0, &consentv1.RequestConsentRequest{
		Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry", Methods: []string{"GetPerson"},
		Fields: []string{"person.names", "person.birth", "person.sex"}, Purpose: "amo-enrolment", Duration: durationpb.New(30 * 24 * time.Hour),
	})
	if err != nil {
		t.Fatalf("RequestConsent: %v", err)
	}
	req := reqResp.GetRequest()
	type result struct {
		r   *consentv1.ConsentRequest
		err error
	}
	followed := make(chan result, 1)
	go func() {
		for {
			wctx, cancel := context.WithTimeout(ctx0, 30*time.Second)
			rr, err := cnss.GetConsentRequest(wctx, &consentv1.GetConsentRequestRequest{Eid: eid, Id: req.GetId(),
				WaitWhile: consentv1.ConsentState_CONSENT_STATE_PENDING, Wait: durationpb.New(25 * time.Second)})
			cancel()
			r := rr.GetRequest()
			if err != nil || r.GetState() != consentv1.ConsentState_CONSENT_STATE_PENDING || ctx0.Err() != nil {
				followed <- result{r, err}
				return
			}
		}
	}()

	// 2. The citizen opens the page in their browser's language and signs in.
	ctx := browsertest.New(t, browsertest.Options{AcceptLanguage: accept})
	do(ctx, "open the page", chromedp.Navigate(base+"/citizen/"), chromedp.WaitVisible(chromedp.ID("signin")))
	if got := eval(ctx, "document.documentElement.lang + ' ' + document.documentElement.dir"); got != lang+" "+dir {
		t.Fatalf("lang and dir: %q, want %q", got, lang+" "+dir)
	}
	if got := eval(ctx, "getComputedStyle(document.body).direction"); got != dir {
		t.Fatalf("computed direction %q, want %q", got, dir)
	}
	noEnglish(ctx, "sign-in")
	accessible(ctx, "sign-in")
	shot(ctx, "1-signin")
	do(ctx, "sign in", chromedp.Click(chromedp.ID("signin"), chromedp.NodeVisible),
		chromedp.Click(chromedp.CSS(fmt.Sprintf("button[name=eid][value=%q]", eid)), chromedp.NodeVisible))

	// 3. The request is shown with its fields in plain words; the citizen keeps only the name.
	form := fmt.Sprintf("form[data-request=%q]", req.GetId())
	do(ctx, "the pending request", chromedp.WaitVisible(chromedp.CSS(form)))
	if got := eval(ctx, "location.pathname"); got != "/citizen/" {
		t.Fatalf("after sign-in: %s", got)
	}
	if got := eval(ctx, "document.documentElement.dir + ' ' + getComputedStyle(document.querySelector('main')).direction"); got != dir+" "+dir {
		t.Fatalf("signed-in page direction %q", got)
	}
	labels := eval(ctx, "[...document.querySelectorAll('"+form+" label[for]')].map(l => l.textContent).join('|')")
	for _, raw := range []string{"person.", "names", "birth"} {
		if strings.Contains(labels, raw) {
			t.Fatalf("a field is shown by its path, not in plain words: %s", labels)
		}
	}
	noEnglish(ctx, "pending request")
	shot(ctx, "2-pending")
	// The citizen asks to see the actual values (audited as their own look).
	do(ctx, "preview", chromedp.Click(chromedp.CSS(form+" button[data-action=preview]"), chromedp.NodeVisible),
		chromedp.WaitVisible(chromedp.CSS(form+" .preview dd")))
	if rows := eval(ctx, "String(document.querySelectorAll('"+form+" .preview dt').length)"); rows == "0" || rows == "1" {
		t.Fatalf("preview rows: %s", rows)
	}
	noEnglish(ctx, "preview")
	accessible(ctx, "preview")
	shot(ctx, "2b-preview")
	for _, fld := range []string{"person.birth", "person.sex"} {
		do(ctx, "untick "+fld, chromedp.Click(chromedp.CSS(form+fmt.Sprintf(" input[value=%q]", fld)), chromedp.NodeVisible))
	}
	do(ctx, "shorten the duration", chromedp.SetValue(chromedp.CSS(form+" input[name=days]"), "7"))
	shot(ctx, "3-fewer-fields")
	do(ctx, "approve", chromedp.Click(chromedp.CSS(form+" button[data-action=approve]"), chromedp.NodeVisible))
	wait(ctx, "the consent shows active", `document.querySelector("#consents li[data-state=ACTIVE]")`)

	// 4. The token reaches CNSS, for the name only, for 7 days.
	res := <-followed
	if res.err != nil || res.r.GetState() != consentv1.ConsentState_CONSENT_STATE_ACTIVE || res.r.GetToken() == "" {
		t.Fatalf("CNSS's follow: %v %v", res.r, res.err)
	}
	if !slices.Equal(res.r.GetFields(), []string{"person.names"}) || time.Until(res.r.GetExpires().AsTime()) > 7*24*time.Hour+time.Minute {
		t.Fatalf("approved %v until %v", res.r.GetFields(), res.r.GetExpires().AsTime())
	}
	md := metadata.NewOutgoingContext(ctx0, metadata.Pairs("jisr-purpose", "amo-enrolment", "jisr-consent", res.r.GetToken()))

	// 5. CNSS's call returns exactly that field, and the access shows up live.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void]("window.__sameView = true")); err != nil {
		t.Fatal(err)
	}
	p, err := person.GetPerson(md, &civilv1.GetPersonRequest{Eid: eid})
	if err != nil {
		t.Fatalf("CNSS's call: %v", err)
	}
	var got map[string]map[string]any
	b, _ := protojson.Marshal(p)
	_ = json.Unmarshal(b, &got)
	if keys := mapKeys(got["person"]); !slices.Equal(keys, []string{"names"}) {
		t.Fatalf("CNSS got %v, want only the names", keys)
	}
	wait(ctx, "the access appears without a reload, its proof checked",
		`window.__sameView && document.querySelector("#rows tr[data-method=GetPerson][data-proof=ok]")`)
	noEnglish(ctx, "access log")
	accessible(ctx, "access log")
	shot(ctx, "4-access-live")

	// 6. Pause: the gateway refuses CNSS.
	li := fmt.Sprintf("#consents li[data-jti=%q]", res.r.GetJti())
	do(ctx, "pause", chromedp.Click(chromedp.CSS(li+" button[data-action=pause]"), chromedp.NodeVisible))
	wait(ctx, "paused", fmt.Sprintf(`document.querySelector('%s[data-state=PAUSED]')`, li))
	bustest.Eventually(t, 10*time.Second, func() error {
		_, err := person.GetPerson(md, &civilv1.GetPersonRequest{Eid: eid})
		if r := decision.ReasonOf(status.Convert(err)); r != "CONSENT_PAUSED" {
			return fmt.Errorf("CNSS while paused: %v", err)
		}
		return nil
	})
	shot(ctx, "5-paused")

	// 7. Revoke.
	do(ctx, "revoke", chromedp.Click(chromedp.CSS(li+" button[data-action=revoke]"), chromedp.NodeVisible))
	wait(ctx, "revoked", fmt.Sprintf(`document.querySelector('%s[data-state=REVOKED]')`, li))
	bustest.Eventually(t, 10*time.Second, func() error {
		_, err := person.GetPerson(md, &civilv1.GetPersonRequest{Eid: eid})
		if r := decision.ReasonOf(status.Convert(err)); r != "CONSENT_REVOKED" {
			return fmt.Errorf("CNSS after revocation: %v", err)
		}
		return nil
	})
	noEnglish(ctx, "after revocation")
	shot(ctx, "6-revoked")
	st, err := getReq(ctx0, cnss, eid, req.GetId())
	if err != nil || st.GetState() != consentv1.ConsentState_CONSENT_STATE_REVOKED {
		t.Fatalf("CNSS sees %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(browsertest.Dir(t), "citizen-"+lang+"-6-revoked.png")); err != nil {
		t.Fatal(err)
	}

	// 8. Two more requests: one use only, and a few seconds. CNSS's one call
	// uses the first up; the second's time passes. The consent service
	// stores and audits both (its own log); CNSS's follow sees both; the
	// page shows both, woken by those records.
	follow := func(r *consentv1.ConsentRequest, while consentv1.ConsentState) *consentv1.ConsentRequest {
		t.Helper()
		rr, err := cnss.GetConsentRequest(ctx0, &consentv1.GetConsentRequestRequest{Eid: eid, Id: r.GetId(), WaitWhile: while, Wait: durationpb.New(25 * time.Second)})
		if err != nil {
			t.Fatalf("CNSS's follow: %v", err)
		}
		return rr.GetRequest()
	}
	approved := func(maxUses int32, d time.Duration) *consentv1.ConsentRequest {
		t.Helper()
		rr, err := cnss.RequestConsent(ctx0, &consentv1.RequestConsentRequest{Eid: eid, Service: "jisr.civilregistry.v1.CivilRegistry",
			Methods: []string{"GetPerson"}, Fields: []string{"person.names"}, Purpose: "amo-enrolment", Duration: durationpb.New(d), MaxUses: maxUses})
		if err != nil {
			t.Fatalf("RequestConsent: %v", err)
		}
		// Clicked in the page, in one step: a live update may re-render the
		// list between finding the button and clicking it.
		button := fmt.Sprintf(`document.querySelector('form[data-request=%q] button[data-action=approve]')`, rr.GetRequest().GetId())
		wait(ctx, "the new request", button)
		eval(ctx, button+".click(), ''")
		r := follow(rr.GetRequest(), consentv1.ConsentState_CONSENT_STATE_PENDING)
		if r.GetState() != consentv1.ConsentState_CONSENT_STATE_ACTIVE || r.GetToken() == "" {
			t.Fatalf("CNSS's follow after the approval: %v", r)
		}
		return r
	}
	once := approved(1, 30*24*time.Hour)
	md = metadata.NewOutgoingContext(ctx0, metadata.Pairs("jisr-purpose", "amo-enrolment", "jisr-consent", once.GetToken()))
	if _, err := person.GetPerson(md, &civilv1.GetPersonRequest{Eid: eid}); err != nil {
		t.Fatalf("CNSS's one call: %v", err)
	}
	if st := follow(once, consentv1.ConsentState_CONSENT_STATE_ACTIVE); st.GetState() != consentv1.ConsentState_CONSENT_STATE_USED_UP {
		t.Fatalf("CNSS sees %v after the last use", st.GetState())
	}
	wait(ctx, "used up", fmt.Sprintf(`document.querySelector('#consents li[data-jti=%q][data-state=USED_UP]')`, once.GetJti()))
	short := approved(0, 4*time.Second)
	if st := follow(short, consentv1.ConsentState_CONSENT_STATE_ACTIVE); st.GetState() != consentv1.ConsentState_CONSENT_STATE_EXPIRED {
		t.Fatalf("CNSS sees %v after the expiry", st.GetState())
	}
	wait(ctx, "expired", fmt.Sprintf(`document.querySelector('#consents li[data-jti=%q][data-state=EXPIRED]')`, short.GetJti()))
	wait(ctx, "the expiry in the access log", `document.querySelector("#rows tr[data-method=ConsentExpired]")`)
	noEnglish(ctx, "used up and expired")
	accessible(ctx, "used up and expired")
	shot(ctx, "7-used-up-expired")
}

func mapKeys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// a11yCheck returns one line per accessibility fault of the page, "" if none.
const a11yCheck = `(() => {
  const bad = [];
  const lum = (c) => {
    const [r, g, b] = c.match(/[\d.]+/g).slice(0, 3).map(Number).map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const bg = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const m = getComputedStyle(e).backgroundColor.match(/[\d.]+/g);
      if (m && (m.length < 4 || +m[3] > 0)) return getComputedStyle(e).backgroundColor;
    }
    return "rgb(255, 255, 255)";
  };
  for (const el of document.querySelectorAll("body *")) {
    if (el.getClientRects().length === 0) continue;
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const a = lum(getComputedStyle(el).color), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) bad.push("contrast " + ratio.toFixed(2) + ": " + el.tagName + " " + el.textContent.trim().slice(0, 40));
  }
  for (const i of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
    if (!(i.labels && i.labels.length) && !i.getAttribute("aria-label")) bad.push("no label: " + (i.id || i.name));
  }
  for (const e of document.querySelectorAll("[tabindex]")) if (+e.getAttribute("tabindex") > 0) bad.push("positive tabindex: " + e.tagName);
  for (const e of document.querySelectorAll("[aria-hidden=true]")) if (e.textContent.trim()) bad.push("hidden from screen readers: " + e.textContent.trim().slice(0, 40));
  if (!document.documentElement.lang || !document.documentElement.dir) bad.push("no lang or dir");
  return bad.join("\n");
})()`
