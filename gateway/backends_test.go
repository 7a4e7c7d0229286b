package gateway_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// Two adapters of civil-registry share its queue group but call different
// backends (a second `jisr adapter --member civil-registry --backend mine`):
// each answer names its backend's fingerprint, and the gateway warns,
// exports jisr_gateway_provider_backends = 2, and tells both adapters in
// its next requests (Jisr-Backends), so they warn too (services/adapter
// TestAdapterWarnsOfAnotherBackend). The fingerprints never reach the
// consumer.
func TestTwoBackendsInOneQueueGroupAreNoticed(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	told := map[string]string{} // fingerprint → the Jisr-Backends it was last sent
	provider := func(fp string) nats.MsgHandler {
		return func(m *nats.Msg) {
			mu.Lock()
			told[fp] = m.Header.Get(bus.HeaderBackends)
			mu.Unlock()
			var req civilv1.GetPersonRequest
			_ = proto.Unmarshal(m.Data, &req)
			b, _ := proto.Marshal(&civilv1.GetPersonResponse{Person: &civilv1.Person{Eid: req.GetEid()}})
			bus.RespondFromBackend(m, b, nil, fp)
		}
	}
	h := start(t, nil, provider("aaaaaaaaaaaa"))
	other := h.env.Connect(t, "civil-registry")
	if _, err := other.QueueSubscribe("jisr.p.civil-registry.>", "p", provider("bbbbbbbbbbbb")); err != nil {
		t.Fatal(err)
	}
	other.Flush()

	bustest.Eventually(t, 30*time.Second, func() error {
		reply, err := h.call(t, testEID, testEID, "GetPerson", "amo-enrolment", "ok", nil)
		if err != nil {
			return err
		}
		if reply.Header.Get(bus.HeaderBackend) != "" || reply.Header.Get(bus.HeaderBackends) != "" {
			t.Fatalf("the consumer got the provider's backend headers: %v", reply.Header)
		}
		mu.Lock()
		defer mu.Unlock()
		both := "aaaaaaaaaaaa,bbbbbbbbbbbb"
		if told["aaaaaaaaaaaa"] != both || told["bbbbbbbbbbbb"] != both {
			return fmt.Errorf("waiting for both adapters to be told %s: %v", both, told)
		}
		return nil
	})
	if got := gaugeValue(t, h, "jisr_gateway_provider_backends"); got != 2 {
		t.Errorf("jisr_gateway_provider_backends = %v, want 2", got)
	}
	h.logsMu.Lock()
	logs := h.logs.String()
	h.logsMu.Unlock()
	if !strings.Contains(logs, "adapters of one provider call different backends") || !strings.Contains(logs, "provider=civil-registry") {
		t.Errorf("no warning in the gateway's log:\n%s", logs)
	}
}

func gaugeValue(t *testing.T, h *harness, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
