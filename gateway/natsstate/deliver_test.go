package natsstate_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// The gateway, the consent service and the auditor may create consumers on
// the streams they read, and a consumer's configuration may name a push
// deliver_subject that NATS's permissions never check against the creator's
// publish rights. As if each of those identities were compromised, this
// creates push consumers on every stream it can, delivering into every
// state-changing subject: a key of each bucket, the JetStream API of each
// stream, the audit and checkpoint subjects, a provider subject and the
// consent API. None of them writes anything: a push consumer delivers only
// when a client holds a subscription on exactly its deliver subject, and
// the server's own subscriptions on those subjects (a stream's, the API's)
// are wildcards; no part subscribes to one of them literally.
//
// (What such a consumer can do is deliver copies of a stream's messages to
// a literal subscription of a colluding member on its own inbox: a
// compromised consent service or auditor could leak what it may read. NATS
// has no permission on deliver subjects; separate accounts would close it.)
func TestPushConsumersOfThePartsWriteNothing(t *testing.T) {
	env := bustest.Start(t)
	c := ctx(t)
	op := env.Connect(t, "operator")
	if _, err := natsstate.Init(c, op, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	specs, err := natsstate.All(stream.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// One message in every stream, written by its own writer.
	gw := env.Connect(t, "gateway")
	gjs, err := jetstream.New(gw)
	if err != nil {
		t.Fatal(err)
	}
	cjs, err := jetstream.New(env.Connect(t, "consent"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range specs {
		var err error
		switch {
		case sp.Stream == subject.AuditStream:
			_, err = gjs.Publish(c, "jisr.audit.gw-1.SEED", []byte("seed"))
		case sp.Stream == subject.CheckpointStream:
			_, err = gjs.Publish(c, "jisr.checkpoint.gw-1", []byte("seed"))
		default:
			js := cjs // grants and revocations: the consent service
			if sp.Bucket == subject.UsageBucket {
				js = gjs // use counters: the gateway
			}
			if sp.Bucket == subject.FederationBucket {
				if js, err = jetstream.New(op); err != nil { // federation versions: the operator
					t.Fatal(err)
				}
			}
			var kv jetstream.KeyValue
			if kv, err = js.KeyValue(c, sp.Bucket); err == nil {
				_, err = kv.Put(c, "seed", []byte("1"))
			}
		}
		if err != nil {
			t.Fatalf("seed %s: %v", sp.Name(), err)
		}
	}
	ojs, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	state := func() map[string]jetstream.StreamState {
		out := map[string]jetstream.StreamState{}
		for _, sp := range specs {
			s, err := ojs.Stream(c, sp.Stream)
			if err != nil {
				t.Fatalf("%s: %v", sp.Stream, err)
			}
			st := s.CachedInfo().State
			st.Consumers = 0 // the attack's consumers come and go
			out[sp.Stream] = st
		}
		return out
	}
	before := state()

	var targets []string
	for _, sp := range specs {
		if sp.Bucket != "" {
			targets = append(targets, "$KV."+sp.Bucket+".seed", "$KV."+sp.Bucket+".forged")
		}
		for _, api := range []string{"STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE", "STREAM.UPDATE"} {
			targets = append(targets, "$JS.API."+api+"."+sp.Stream)
		}
	}
	targets = append(targets, "$JS.API.STREAM.CREATE.EVIL", "jisr.audit.gw-1.FORGED", "jisr.checkpoint.gw-1",
		"jisr.p.civil-registry.jisr_civilregistry_v1_CivilRegistry.GetPerson.FORGED", subject.ConsentAPI+".revoke")

	created := map[string]int{}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, who := range []string{"gateway", "consent", "auditor"} {
		nc := env.Connect(t, who, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		for _, sp := range specs {
			for _, deliver := range targets {
				wg.Go(func() {
					req, _ := json.Marshal(map[string]any{"stream_name": sp.Stream, "config": map[string]any{
						"deliver_subject": deliver, "ack_policy": "none", "inactive_threshold": int64(time.Minute)}})
					// 10 s: hundreds of these run at once, and a loaded machine
					// answers slowly (5 s was too short for some of the allowed
					// ones on 2 cores with a benchmark beside). A refused one is
					// not answered and waits it out, all of them together.
					m, err := nc.Request("$JS.API.CONSUMER.CREATE."+sp.Stream, req, 10*time.Second)
					if err != nil {
						return // refused by the permissions: no answer
					}
					var resp struct{ Error *struct{ Description string } }
					if json.Unmarshal(m.Data, &resp) == nil && resp.Error == nil {
						mu.Lock()
						created[who+" "+sp.Stream]++
						mu.Unlock()
					}
				})
			}
		}
	}
	wg.Wait()
	// The attack is real: each part creates push consumers on what it reads.
	for _, want := range []string{"gateway " + subject.AuditStream, "consent " + subject.BucketStream(subject.RevocationBucket), "auditor " + subject.AuditStream} {
		if created[want] == 0 {
			t.Fatalf("no push consumer created by %s (created: %v): the test does not try what it says", want, created)
		}
	}

	// Control: a push consumer delivering to a literal subscription on the
	// creator's own inbox does deliver, and it was created after all of the
	// above, on every stream.
	for _, sp := range specs {
		inbox := fmt.Sprintf("_INBOX.operator.control.%s", sp.Stream)
		sub, err := op.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := json.Marshal(map[string]any{"stream_name": sp.Stream, "config": map[string]any{"deliver_subject": inbox, "ack_policy": "none"}})
		if _, err := op.Request("$JS.API.CONSUMER.CREATE."+sp.Stream, req, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("control delivery from %s: %v", sp.Stream, err)
		}
	}

	after := state()
	for _, sp := range specs {
		if b, a := before[sp.Stream], after[sp.Stream]; a.Msgs != b.Msgs || a.LastSeq != b.LastSeq || a.FirstSeq != b.FirstSeq {
			t.Errorf("%s changed: %+v → %+v", sp.Stream, b, a)
		}
	}
	if _, err := ojs.Stream(c, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("a stream was created: %v", err)
	}
	names := ojs.StreamNames(c)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if len(got) != len(specs) || slices.Contains(got, "EVIL") {
		t.Errorf("streams now: %v", got)
	}
}
