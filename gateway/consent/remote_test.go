package consent_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
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

// The consent service may answer each request it receives once
// (allow_responses), which NATS lets through whatever the reply subject, and
// it may write the grant and revocation buckets: a request on the consent
// API whose reply subject is not the gateway's own inbox — as a compromised
// gateway could send — is not answered, so its answer never becomes a key,
// a JetStream API call or another member's message.
func TestConsentAPIAnswersOnlyTheGatewaysInbox(t *testing.T) {
	f := start(t, 1)
	ckey := f.env.Keyer.CKey(citizen)
	body, _ := json.Marshal(map[string]any{"ckey": ckey, "grant": consent.GrantRequest{To: "cnss", Service: svc, Methods: []string{"GetPerson"}, Purpose: purpose, TTL: "1h"}})
	tax := f.env.Connect(t, "tax")
	leaked, err := tax.SubscribeSync("_INBOX.tax.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := tax.Flush(); err != nil {
		t.Fatal(err)
	}
	forged := []string{"$KV." + subject.RevocationBucket + ".forged", "$KV." + subject.ConsentBucket + ".forged",
		"$KV." + subject.UsageBucket + ".forged", "_INBOX.tax.leak", "$JS.API.STREAM.PURGE." + subject.BucketStream(subject.RevocationBucket),
		"_INBOX.gateway", "_INBOX.gateway.>", ""}
	for _, r := range forged {
		if err := f.gwNC.PublishMsg(&nats.Msg{Subject: consent.SubjectGrant, Reply: r, Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	// Control: the same request from the gateway's inbox is answered; the
	// consent service handles requests in order, so the forged ones are done.
	if _, err := consent.NewClient(f.gwNC).Grant(context.Background(), ckey, consent.GrantRequest{To: "cnss", Service: svc, Methods: []string{"GetPerson"}, Purpose: purpose, TTL: "1h"}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(f.env.Connect(t, "operator"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, b := range []string{subject.RevocationBucket, subject.ConsentBucket, subject.UsageBucket} {
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Get(ctx, "forged"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("bucket %s: a key was written by a forged reply (get: %v)", b, err)
		}
	}
	if err := tax.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := leaked.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("tax received the consent service's answer on %s", m.Subject)
	}
}
