package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/cmd/internal/dev"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	taxv1 "github.com/jisr-bus/jisr/proto/gen/jisr/tax/v1"
	"github.com/jisr-bus/jisr/services/demodata"
)

// TestDevPredicatesCannotBecomeLookUps is issue 12's threshold scan against
// `jisr dev`, with its demo consent token and the real tax backend: chosen
// thresholds are refused, the rule's own question is answered (at most three
// times a day per citizen), and a household under one person's consent
// carries no relative's eID.
func TestDevPredicatesCannotBecomeLookUps(t *testing.T) {
	f := startDev(t)
	var taxTok, civilTok *dev.Token
	for i := range f.demo.Tokens {
		d := &f.demo.Tokens[i]
		switch {
		case d.Consumer == "cnss" && d.Provider == "tax" && slices.Contains(d.Methods, "IsIncomeBelow"):
			taxTok = d
		case d.Consumer == "cnss" && d.Provider == "civil-registry" && slices.Contains(d.Methods, "GetHousehold"):
			civilTok = d
		}
	}
	if taxTok == nil || civilTok == nil {
		t.Fatalf("demo.json lacks the cnss → tax IsIncomeBelow or cnss → civil-registry GetHousehold token: %+v", f.demo.Tokens)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cc := f.dial(t, "cnss")
	tax := taxv1.NewTaxClient(cc)
	md := func(tok *dev.Token) context.Context {
		return metadata.NewOutgoingContext(ctx, metadata.Pairs("jisr-purpose", tok.Purpose, "jisr-consent", tok.Token))
	}

	lo, hi := int64(1), int64(100_000_000) // 1 centime to 1 000 000 MAD
	for i := 0; i < 20; i++ {
		mid := (lo + hi) / 2
		if mid == demodata.LowIncomeThreshold {
			mid++
		}
		_, err := tax.IsIncomeBelow(md(taxTok), &taxv1.IsIncomeBelowRequest{Eid: taxTok.Citizen, Year: demodata.LastYear, ThresholdMinorUnits: mid})
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || decision.ReasonOf(st) != decision.ReasonPredicateParameter {
			t.Fatalf("query %d, threshold %d: %v %q", i, mid, st.Code(), st.Message())
		}
		lo = mid
	}
	for i, th := range []int64{0, demodata.LowIncomeThreshold, 0} {
		if _, err := tax.IsIncomeBelow(md(taxTok), &taxv1.IsIncomeBelowRequest{Eid: taxTok.Citizen, Year: demodata.LastYear - int32(i), ThresholdMinorUnits: th}); err != nil {
			t.Fatalf("the rule's own question %d: %v", i, err)
		}
	}
	_, err := tax.IsIncomeBelow(md(taxTok), &taxv1.IsIncomeBelowRequest{Eid: taxTok.Citizen, Year: demodata.LastYear})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || decision.ReasonOf(st) != decision.ReasonPredicateLimit {
		t.Fatalf("a fourth predicate query the same day: %v", err)
	}

	h, err := civilv1.NewCivilRegistryClient(cc).GetHousehold(md(civilTok), &civilv1.GetHouseholdRequest{Eid: civilTok.Citizen})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetHousehold().GetMembers()) == 0 {
		t.Fatalf("household %v", h)
	}
	for _, m := range h.GetHousehold().GetMembers() {
		if m.GetEid() != "" || m.GetGivenName() != "" || m.GetRelation() == civilv1.Relation_RELATION_UNSPECIFIED {
			t.Fatalf("household member %v: want the relation only", m)
		}
	}
}
