package consent_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/gateway/consent"
)

// Only the gateway may ask the consent service to mint: a member that
// publishes a grant request on the consent API subject (naming any citizen)
// gets nothing, and cannot listen there to read the requests either. The
// gateway's request is answered, with a token its verifier accepts.
func TestConsentAPIOnlyFromTheGateway(t *testing.T) {
	t.Parallel()
	f := start(t, 1)
	ckey := f.env.Keyer.CKey(citizen)
	grant := consent.GrantRequest{To: "cnss", Service: svc, Methods: []string{"GetPerson"}, Purpose: purpose, TTL: "1h"}
	body, _ := json.Marshal(map[string]any{"ckey": ckey, "grant": grant})

	for _, member := range []string{"cnss", "tax", "civil-registry"} {
		t.Run(member+" cannot ask", func(t *testing.T) {
			errs := make(chan error, 4)
			nc := f.env.Connect(t, member, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
			replies, _ := nc.SubscribeSync(nc.NewRespInbox())
			if err := nc.PublishRequest(consent.SubjectGrant, replies.Subject, body); err != nil {
				t.Fatal(err)
			}
			nc.Flush()
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Fatalf("publish: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s published on the consent API subject", member)
			}
			if m, err := replies.NextMsg(100 * time.Millisecond); err == nil {
				t.Fatalf("%s got a reply from the consent service: %s", member, m.Data)
			}
		})
		t.Run(member+" cannot listen", func(t *testing.T) {
			errs := make(chan error, 4)
			nc := f.env.Connect(t, member, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
			if _, err := nc.SubscribeSync(consent.SubjectGrant); err != nil {
				t.Fatal(err)
			}
			nc.Flush()
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Fatalf("subscribe: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s subscribed to the consent API subject", member)
			}
		})
	}
	if gs, err := f.store.List(context.Background(), ckey); err != nil || len(gs) != 0 {
		t.Fatalf("grants recorded from members' requests: %v %v", gs, err)
	}

	resp, err := consent.NewClient(f.gwNC).Grant(context.Background(), ckey, grant)
	if err != nil {
		t.Fatalf("the gateway's grant: %v", err)
	}
	if _, err := f.call(t, f.cnss, "cnss", citizen, resp.Token, purpose); err != nil {
		t.Fatalf("the token minted for the gateway is refused: %v", err)
	}
	if _, err := consent.NewClient(f.gwNC).Grant(context.Background(), ckey, consent.GrantRequest{To: "nobody", Service: svc, Methods: []string{"GetPerson"}, Purpose: purpose}); !errors.Is(err, consent.ErrBadRequest) {
		t.Fatalf("a bad grant over NATS: %v, want ErrBadRequest", err)
	}
	if _, err := consent.NewClient(f.gwNC).RevokeFor(context.Background(), f.env.Keyer.CKey(other), resp.ID); !errors.Is(err, consent.ErrUnknownToken) {
		t.Fatalf("another citizen's revocation over NATS: %v, want ErrUnknownToken", err)
	}
}
