package gateway_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	taxv1 "github.com/jisr-bus/jisr/proto/gen/jisr/tax/v1"
)

// ruleThreshold is the demo rule cnss-income-threshold's fixed parameter.
const ruleThreshold = 6000000

// taxProvider answers IsIncomeBelow for one hidden income and records the
// thresholds it was asked about.
type taxProvider struct {
	mu     sync.Mutex
	income int64
	asked  []int64
}

func (p *taxProvider) serve(m *nats.Msg) {
	var req taxv1.IsIncomeBelowRequest
	if err := proto.Unmarshal(m.Data, &req); err != nil {
		bus.RespondError(m, status.Error(codes.InvalidArgument, "bad request"))
		return
	}
	p.mu.Lock()
	p.asked = append(p.asked, req.GetThresholdMinorUnits())
	below := p.income < req.GetThresholdMinorUnits()
	p.mu.Unlock()
	b, _ := proto.Marshal(&taxv1.IsIncomeBelowResponse{Below: below})
	bus.Respond(m, b, nil)
}

func (h *harness) askTax(t *testing.T, eid string, req *taxv1.IsIncomeBelowRequest) (*taxv1.IsIncomeBelowResponse, error) {
	t.Helper()
	req.Eid = eid
	payload, _ := proto.Marshal(req)
	subj, err := subject.Query{Consumer: "cnss", Provider: "tax", Service: "jisr_tax_v1_Tax",
		Method: "IsIncomeBelow", CKey: h.env.Keyer.CKey(eid)}.Subject()
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subj, Data: payload, Header: nats.Header{}}
	msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
	msg.Header.Set(bus.HeaderConsent, "ok")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := bus.Call(ctx, h.cnss, msg)
	if err != nil {
		return nil, err
	}
	var resp taxv1.IsIncomeBelowResponse
	if err := proto.Unmarshal(reply.Data, &resp); err != nil {
		t.Fatal(err)
	}
	return &resp, nil
}

// TestThresholdScanningIsRefused is the attack of issue 12: a consumer with
// a valid consent asks IsIncomeBelow with thresholds of its choice, halving
// the interval each time, to learn the income within 1 MAD.
func TestThresholdScanningIsRefused(t *testing.T) {
	t.Parallel()
	tax := &taxProvider{income: 5321742}
	h := start(t, nil, nil)
	tc := h.env.Connect(t, "tax")
	if _, err := tc.Subscribe("jisr.p.tax.>", tax.serve); err != nil {
		t.Fatal(err)
	}
	tc.Flush()

	lo, hi := int64(0), int64(20000000)
	for i := 0; i < 20; i++ {
		mid := (lo + hi) / 2
		if mid == ruleThreshold {
			mid++
		}
		_, err := h.askTax(t, testEID, &taxv1.IsIncomeBelowRequest{Year: 2024, ThresholdMinorUnits: mid})
		st := status.Convert(err)
		if st.Code() != codes.PermissionDenied || decision.ReasonOf(st) != decision.ReasonPredicateParameter {
			t.Fatalf("query %d with threshold %d: %v %q, want PermissionDenied %s", i, mid, st.Code(), st.Message(), decision.ReasonPredicateParameter)
		}
		hi = mid // whatever the attacker guesses, it learns nothing
	}
	tax.mu.Lock()
	if len(tax.asked) != 0 {
		t.Fatalf("the provider was asked %v", tax.asked)
	}
	tax.mu.Unlock()

	// The rule's own question works, whether the caller leaves the
	// threshold out or sends exactly the rule's value.
	for i, req := range []*taxv1.IsIncomeBelowRequest{
		{Year: 2024}, {Year: 2024, ThresholdMinorUnits: ruleThreshold}, {Year: 2023},
	} {
		resp, err := h.askTax(t, testEID, req)
		if err != nil || !resp.GetBelow() {
			t.Fatalf("fixed-threshold query %d: %v, %v", i, resp, err)
		}
	}
	tax.mu.Lock()
	for _, th := range tax.asked {
		if th != ruleThreshold {
			t.Fatalf("the provider was asked threshold %d, not the rule's", th)
		}
	}
	tax.mu.Unlock()

	// Three a day per citizen (predicate_limit): the fourth is refused,
	// another citizen is counted apart.
	_, err := h.askTax(t, testEID, &taxv1.IsIncomeBelowRequest{Year: 2022})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || decision.ReasonOf(st) != decision.ReasonPredicateLimit {
		t.Fatalf("fourth predicate query: %v, want ResourceExhausted %s", err, decision.ReasonPredicateLimit)
	}
	if _, err := h.askTax(t, "BK100001", &taxv1.IsIncomeBelowRequest{Year: 2024}); err != nil {
		t.Fatalf("another citizen: %v", err)
	}

	// Every refusal is audited with its reason.
	counts := map[string]int{}
	for _, r := range h.audit.all() {
		counts[r.Reason]++
		if r.Reason == decision.ReasonPredicateLimit && (r.Allowed || r.Code != codes.ResourceExhausted || r.CKey != h.env.Keyer.CKey(testEID) || r.Rule != "cnss-income-threshold") {
			t.Errorf("limit refusal audited as %+v", r)
		}
	}
	if counts[decision.ReasonPredicateParameter] != 20 || counts[decision.ReasonPredicateLimit] != 1 || counts[decision.ReasonAllowed] != 4 {
		t.Fatalf("audited reasons %v", counts)
	}
}

// TestPredicateParameterEncodings (phase 2 attack): the threshold sent in
// another encoding — twice with the chosen value last or first, with the
// wrong wire type (fixed64, a packed list, a group), as an overlong varint,
// or as -0 — is either refused or replaced by the rule's value: the
// provider is never asked another threshold.
func TestPredicateParameterEncodings(t *testing.T) {
	tax := &taxProvider{income: 5321742}
	h := start(t, nil, nil)
	tc := h.env.Connect(t, "tax")
	if _, err := tc.Subscribe("jisr.p.tax.>", tax.serve); err != nil {
		t.Fatal(err)
	}
	tc.Flush()
	const chosen = 5321743
	varint := func(v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), v)
	}
	overlong := append(protowire.AppendTag(nil, 3, protowire.VarintType), 0x80|byte(chosen&0x7f), 0x80|byte(chosen>>7&0x7f), 0x80|byte(chosen>>14&0x7f), 0x80|byte(chosen>>21&0x7f), 0x80, 0x00)
	packed := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), protowire.AppendVarint(nil, chosen))
	group := protowire.AppendTag(protowire.AppendVarint(protowire.AppendTag(protowire.AppendTag(nil, 3, protowire.StartGroupType), 1, protowire.VarintType), chosen), 3, protowire.EndGroupType)
	cases := map[string][]byte{
		"the rule's value then the chosen one":          append(varint(ruleThreshold), varint(chosen)...),
		"the chosen value then the rule's":              append(varint(chosen), varint(ruleThreshold)...),
		"as fixed64":                                    protowire.AppendFixed64(protowire.AppendTag(nil, 3, protowire.Fixed64Type), chosen),
		"as a packed list":                              packed,
		"as a group":                                    group,
		"as an overlong varint":                         overlong,
		"negative zero (all bits of -0 as int64 are 0)": varint(0),
	}
	answered, i := 0, 0
	for name, extra := range cases {
		i++
		eid := fmt.Sprintf("BK2000%02d", i) // one citizen each: the predicate limit stays out of the way
		base, _ := proto.Marshal(&taxv1.IsIncomeBelowRequest{Eid: eid, Year: 2024})
		req := append(base, extra...)
		subj, _ := subject.Query{Consumer: "cnss", Provider: "tax", Service: "jisr_tax_v1_Tax", Method: "IsIncomeBelow", CKey: h.env.Keyer.CKey(eid)}.Subject()
		msg := &nats.Msg{Subject: subj, Data: req, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderPurpose, "amo-enrolment")
		msg.Header.Set(bus.HeaderConsent, "ok")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := bus.Call(ctx, h.cnss, msg)
		cancel()
		if err == nil {
			answered++
		} else if st := status.Convert(err); decision.ReasonOf(st) != decision.ReasonPredicateParameter {
			t.Errorf("%s: %v", name, err)
		}
	}
	tax.mu.Lock()
	defer tax.mu.Unlock()
	if len(tax.asked) != answered || answered == 0 {
		t.Fatalf("%d answered, the provider asked %d times", answered, len(tax.asked))
	}
	for _, th := range tax.asked {
		if th != ruleThreshold {
			t.Fatalf("the provider was asked threshold %d, not the rule's", th)
		}
	}
}
