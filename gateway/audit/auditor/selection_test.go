package auditor_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/gateway/audit/auditor"
	auditv1 "github.com/jisr-bus/jisr/proto/gen/jisr/audit/v1"
)

func TestSelection(t *testing.T) {
	for _, bad := range []auditor.Selection{{Decision: "maybe"}, {CKey: "a.b"}, {Log: "gw.1"}} {
		if err := bad.Resolve(); err == nil {
			t.Errorf("%+v resolved", bad)
		}
	}
	var all auditor.Selection
	if err := all.Resolve(); err != nil || all.Narrowed() {
		t.Fatalf("the empty selection: %v, narrowed %v", err, all.Narrowed())
	}
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	r := &auditv1.Record{Consumer: "cnss", Provider: "tax", Decision: auditv1.Decision_DECISION_ALLOWED, Time: timestamppb.New(at)}
	for _, tc := range []struct {
		sel  auditor.Selection
		want bool
	}{
		{auditor.Selection{}, true},
		{auditor.Selection{Consumer: "cnss"}, true},
		{auditor.Selection{Consumer: "tax"}, false},
		{auditor.Selection{Provider: "cnss"}, false},
		{auditor.Selection{Decision: "allowed"}, true},
		{auditor.Selection{Decision: "refused"}, false},
		{auditor.Selection{From: at.Add(time.Second)}, false},
		{auditor.Selection{To: at.Add(-time.Second)}, false},
		{auditor.Selection{From: at, To: at}, true},
	} {
		if err := tc.sel.Resolve(); err != nil {
			t.Fatal(err)
		}
		if got := tc.sel.Match(r); got != tc.want {
			t.Errorf("%+v matches %v, want %v", tc.sel, got, tc.want)
		}
	}
	s := auditor.Selection{Log: "gw-1"}
	if err := s.Resolve(); err != nil || !s.Narrowed() {
		t.Errorf("a log: %v, narrowed %v", err, s.Narrowed())
	}
}
