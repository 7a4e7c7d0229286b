package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/gateway/audit/record"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
	cnssv1 "github.com/jisr-bus/jisr/proto/gen/jisr/cnss/v1"
)

// The printed tour: `jisr dev` seeded a birth for CNSS; recording a death at
// the civil registry reaches CNSS and health — each delivery audited — and
// not tax, which has no death rule; CNSS's reference backend stops the
// pension, and the next query about the pensioner shows it.
func TestDevTourADeathStopsThePension(t *testing.T) {
	f := startDev(t)
	if !strings.Contains(f.out.String(), "jisr events record-death") || !strings.Contains(f.out.String(), "jisr events tail --as cnss") {
		t.Fatalf("the tour is not printed:\n%s", f.out.String())
	}
	eid := dev.Pensioner()
	cnss := cnssv1.NewSocialSecurityClient(f.dial(t, "tax"))
	affiliation := func() cnssv1.AffiliationStatus {
		ctx, cancel := context.WithTimeout(md(context.Background(), "jisr-purpose", "income-verification"), 10*time.Second)
		defer cancel()
		res, err := cnss.GetAffiliation(ctx, &cnssv1.GetAffiliationRequest{Eid: eid})
		if err != nil {
			t.Fatal(err)
		}
		return res.GetAffiliation().GetStatus()
	}
	if got := affiliation(); got != cnssv1.AffiliationStatus_AFFILIATION_STATUS_RETIRED {
		t.Fatalf("the pensioner's affiliation before: %v", got)
	}
	a := &auditFed{g: f.g}
	out, errOut, err := a.cli("events", "record-death", "--eid", eid, "--backend", f.demo.Endpoints["backend/civil-registry"])
	if err != nil || !strings.Contains(out, "delivered to 2 member(s)") {
		t.Fatalf("record-death: %v\n%s%s", err, out, errOut)
	}
	bustest.Eventually(t, 30*time.Second, func() error {
		got := affiliation()
		return bustest.Check(got == cnssv1.AffiliationStatus_AFFILIATION_STATUS_INACTIVE, fmt.Sprintf("affiliation %v", got))
	})

	tail := func(member string) string {
		out, errOut, err := a.cli("events", "tail", "--as", member, "--follow=false")
		if err != nil {
			t.Fatalf("events tail --as %s: %v\n%s", member, err, errOut)
		}
		return out
	}
	if got := tail("cnss"); !strings.Contains(got, "PersonDied") || !strings.Contains(got, "PersonBorn") || strings.Contains(got, "actNumber") {
		t.Fatalf("cnss received:\n%s", got)
	}
	if got := tail("tax"); strings.Contains(got, "PersonDied") || !strings.Contains(got, "AddressChanged") {
		t.Fatalf("tax received:\n%s", got)
	}

	// CNSS's rule allows replays, health's does not.
	out, errOut, err = a.cli("events", "replay", "--as", "cnss", "--since", "1h", "--adapter", f.demo.Endpoints["adapter/cnss"])
	if err != nil || !strings.Contains(out, "event(s) delivered again to cnss") || strings.HasPrefix(out, "0 ") {
		t.Fatalf("replay for cnss: %v\n%s%s", err, out, errOut)
	}
	if _, _, err := a.cli("events", "replay", "--as", "health", "--since", "1h", "--adapter", f.demo.Endpoints["adapter/health"]); err == nil || !strings.Contains(err.Error(), "allows replays") {
		t.Fatalf("replay for health: %v", err)
	}

	keyer, err := f.g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	a.g.NATSURL = f.demo.Endpoints["nats"]
	delivered := map[string]int{}
	for _, m := range a.auditRecords(t) {
		r, err := record.Parse(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetMethod() == "PersonDied" && r.GetCkey() == keyer.CKey(eid) && r.GetDecision() == auditv1.Decision_DECISION_ALLOWED {
			delivered[r.GetConsumer()]++
		}
	}
	// cnss: the delivery and its replay (audited as such); health: the delivery.
	if delivered["cnss"] != 2 || delivered["health"] != 1 || len(delivered) != 2 {
		t.Fatalf("audited deliveries of the death: %v", delivered)
	}
}
