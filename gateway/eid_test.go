package gateway_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/gateway/decision"
)

// A member that bypasses its adapter and sends an eID spelt with a letter
// whose Unicode upper case is ASCII ("nſ389813" → "NS389813"), under the
// ckey of NS389813, is refused BAD_EID: the gateway reads only ASCII, as the
// adapter, the consent CLI and the reference backends do
// (cmd/jisr TestEIDIsNormalisedTheSameEverywhere). The provider never sees
// the query, and the refusal names the expected format, not the eID.
func TestUnicodeSpellingsOfAnEIDAreRefused(t *testing.T) {
	t.Parallel()
	var asked atomic.Int32
	h := start(t, nil, func(m *nats.Msg) { asked.Add(1); answer(m) })
	for _, raw := range []string{"nſ389813", "ıD12345", "ＮＳ389813", "NS389813\u00a0"} {
		upper := strings.ToUpper(strings.TrimSpace(raw))
		_, err := h.call(t, raw, upper, "GetPerson", "amo-enrolment", "ok", nil)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || decision.ReasonOf(st) != decision.ReasonBadEID ||
			!strings.Contains(st.Message(), "ASCII") || strings.Contains(st.Message(), raw) {
			t.Errorf("%q: got %v %q %q, want InvalidArgument BAD_EID naming the format", raw, st.Code(), decision.ReasonOf(st), st.Message())
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the provider was asked %d times", n)
	}
}
