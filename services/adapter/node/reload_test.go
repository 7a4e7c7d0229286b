package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/descset"
	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/fedwatch"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/services/adapter"
	"github.com/jisr-bus/jisr/services/adapter/node"
)

// A running adapter applies a signed federation version published in the
// jisr_federation bucket without a restart, reading the bucket with its own
// member identity: a rule the new version adds shows at once in its
// consumer side's reflection. A bundle with a bad signature, one not newer,
// and one that drops the member or names an unknown method are refused, and
// the running version stays.
func TestAdapterAppliesNewFederationVersionWithoutRestart(t *testing.T) {
	t.Parallel()
	base, err := os.ReadFile("../../../bus/testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := bustest.Start(t, bustest.WithFederation(base))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The operator creates the bucket (as jisr nats init does).
	js, err := jetstream.New(env.Connect(t, subject.Operator))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: subject.FederationBucket, History: 64})
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(version uint64, yaml []byte, signer ed25519.PrivateKey) {
		t.Helper()
		raw, err := federation.Sign(&federation.Bundle{Version: version, Created: time.Now(), Federation: yaml, Descriptors: env.Fed.Descriptors}, signer)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, subject.FederationKey, raw); err != nil {
			t.Fatal(err)
		}
	}

	n, err := node.Start(ctx, node.Config{
		Adapter: adapter.Config{Member: "health", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "health"), Log: env.Log,
			Backend: "127.0.0.1:1"}, // never called here
		Listen: "127.0.0.1:0",
	}, node.WithFederationWatch(pub))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	list := func() []string {
		t.Helper()
		st, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.CloseSend()
		if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range r.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names
	}
	const tax = "jisr.tax.v1.Tax"
	if got := list(); slices.Contains(got, tax) || !slices.Contains(got, "jisr.cnss.v1.SocialSecurity") {
		t.Fatalf("version 0: reflection lists %v", got)
	}

	rule := `
  - name: health-tax-clearance
    consumer: health
    provider: tax
    service: jisr.tax.v1.Tax
    methods: [GetTaxClearance]
    purposes: [care-eligibility]
    legal_basis: mandate
    law: "test"
`
	v1 := bytes.Replace(base, []byte("\nrules:\n"), []byte("\nrules:"+rule+"\n"), 1)
	publish(1, v1, key)
	bustest.Eventually(t, 20*time.Second, func() error {
		if v := n.FederationVersion(); v != 1 {
			return fmt.Errorf("version %d in force", v)
		}
		return nil
	})
	if got := list(); !slices.Contains(got, tax) {
		t.Fatalf("version 1: reflection lists %v, without %s", got, tax)
	}
	// (The backend is down here: only the watch's part of readiness is checked.)
	if err := n.Ready(ctx); err == nil || strings.Contains(err.Error(), "federation watch") {
		t.Fatalf("readiness after version 1: %v", err)
	}

	// A member reads the bucket, and cannot write it, even a well-signed bundle.
	mjs, err := jetstream.New(env.Connect(t, "health"))
	if err != nil {
		t.Fatal(err)
	}
	mkv, err := mjs.KeyValue(ctx, subject.FederationBucket)
	if err != nil {
		t.Fatalf("a member cannot read the federation bucket: %v", err)
	}
	signed, _ := federation.Sign(&federation.Bundle{Version: 7, Federation: v1, Descriptors: env.Fed.Descriptors}, key)
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second) // a refused publish gets no answer
	defer cancelShort()
	if _, err := mkv.Put(short, subject.FederationKey, signed); err == nil {
		t.Fatal("a member wrote the federation bucket")
	}
	short2, cancelShort2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort2()
	if err := mjs.DeleteKeyValue(short2, subject.FederationBucket); err == nil {
		t.Fatal("a member deleted the federation bucket")
	}

	// Nor create a consumer on it: a consumer's deliver subject would let
	// it make the server publish where it may not. Its adapter polls.
	short3, cancelShort3 := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort3()
	if w, err := mkv.Watch(short3, subject.FederationKey); err == nil {
		select {
		case e := <-w.Updates():
			if e != nil {
				t.Fatal("a member watched the federation bucket with a consumer of its own")
			}
		case <-short3.Done():
		}
		_ = w.Stop()
	}

	// Refused, through the bucket: another key's signature; not newer. The
	// adapter polls the latest revision, so each is published once the
	// previous one was seen.
	_, other, _ := ed25519.GenerateKey(nil)
	publish(2, base, other)
	bustest.Eventually(t, 20*time.Second, func() error {
		if n.FederationRefused(fedwatch.ReasonBadSignature) != 1 {
			return fmt.Errorf("refusals: bad signature %v", n.FederationRefused(fedwatch.ReasonBadSignature))
		}
		return nil
	})
	publish(1, base, key)
	bustest.Eventually(t, 20*time.Second, func() error {
		if n.FederationRefused(fedwatch.ReasonBadSignature) != 1 || n.FederationRefused(fedwatch.ReasonNotNewer) != 1 {
			return fmt.Errorf("refusals: bad signature %v, not newer %v", n.FederationRefused(fedwatch.ReasonBadSignature), n.FederationRefused(fedwatch.ReasonNotNewer))
		}
		return nil
	})
	if v := n.FederationVersion(); v != 1 {
		t.Fatalf("version %d in force after the refused bundles", v)
	}
	// Refused by the adapter itself: an unknown method; not newer.
	if err := n.Adapter().SetFederation(mustParse(t, v1), 3, env.Fed.Descriptors); err != nil {
		t.Fatalf("a good version 3 refused: %v", err)
	}
	for _, bad := range []struct {
		yaml []byte
		says string
	}{
		{bytes.Replace(v1, []byte("methods: [GetTaxClearance]"), []byte("methods: [GetTaxSecrets]"), 1), "GetTaxSecrets"},
	} {
		if err := n.Adapter().SetFederation(mustParse(t, bad.yaml), 9, env.Fed.Descriptors); err == nil || !strings.Contains(err.Error(), bad.says) {
			t.Fatalf("version refused? %v (want %q)", err, bad.says)
		}
	}
	if err := n.Adapter().SetFederation(mustParse(t, v1), 3, env.Fed.Descriptors); err == nil {
		t.Fatal("version 3 applied twice")
	}
	if v := n.FederationVersion(); v != 3 {
		t.Fatalf("version %d in force after the refusals, want 3", v)
	}
	if got := list(); !slices.Contains(got, tax) {
		t.Fatalf("after the refusals: reflection lists %v", got)
	}
}

func mustParse(t *testing.T, yaml []byte) *federation.Federation {
	t.Helper()
	f, err := federation.Parse(yaml)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A consumer-only member (justice) whose adapter runs gets a service in a
// new signed federation version: its provider side starts without a
// restart — it takes the gateway's requests on jisr.p.justice.> and
// registers in the catalogue (the operator's discovery request is
// answered), where before it answered nothing.
func TestConsumerOnlyMemberStartsItsProviderSideWithANewVersion(t *testing.T) {
	t.Parallel()
	base, err := os.ReadFile("../../../bus/testdata/federation.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := os.ReadFile("../../../deploy/members/justice/justice.binpb")
	if err != nil {
		t.Fatal(err)
	}
	v0 := bytes.Replace(base, []byte("\nmembers:\n"), []byte("\nmembers:\n  - name: justice\n    title: Ministry of justice\n"), 1)
	v1 := bytes.Replace(v0, []byte("title: Ministry of justice\n"), []byte("title: Ministry of justice\n    provides: [jisr.justice.v1.CriminalRecord]\n"), 1)
	v1 = bytes.Replace(v1, []byte("\ndescriptor_sets:\n"), []byte("\ndescriptor_sets:\n  - file: justice.binpb\n    sha256: "+descset.Digest(set)+"\n"), 1)
	if bytes.Equal(v0, base) || bytes.Count(v1, []byte("justice")) != bytes.Count(v0, []byte("justice"))+2 {
		t.Fatal("could not add justice to the federation file")
	}
	env := bustest.Start(t, bustest.WithFederation(v0))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(env.Connect(t, subject.Operator))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: subject.FederationBucket, History: 64})
	if err != nil {
		t.Fatal(err)
	}
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}

	n, err := node.Start(ctx, node.Config{
		Adapter: adapter.Config{Member: "justice", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "justice", nats.MaxReconnects(-1)), Log: env.Log,
			Backend: "127.0.0.1:1"}, // its backend: the provider side dials it lazily
		Listen: "127.0.0.1:0",
	}, node.WithFederationWatch(pub))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	if n.Adapter().Providing() {
		t.Fatal("a consumer-only member's provider side runs")
	}
	op := env.Connect(t, subject.Operator)
	gw := env.Connect(t, "gateway")
	ping := subject.Discovery + ".PING." + subject.DiscoveryName("justice")
	ckey := env.Keyer.CKey("AB123456")
	query, err := subject.Query{Consumer: "cnss", Provider: "justice", Service: subject.ServiceToken("jisr.justice.v1.CriminalRecord"), Method: "HasConviction", CKey: ckey}.ProviderSubject()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Request(query, nil, time.Second); err == nil {
		t.Fatal("version 0: something answered a provider query for justice")
	}

	// Version 1, signed and published; the NATS server takes it too (as
	// its own watch does), for justice's open connection.
	fed1, err := federation.Parse(v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Server.SetFederation(fed1); err != nil {
		t.Fatal(err)
	}
	sets := maps.Clone(env.Fed.Descriptors)
	sets["justice.binpb"] = set
	raw, err := federation.Sign(&federation.Bundle{Version: 1, Created: time.Now(), Federation: v1, Descriptors: sets}, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, subject.FederationKey, raw); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 30*time.Second, func() error {
		if !n.Adapter().Providing() {
			return fmt.Errorf("provider side not started (version %d in force)", n.FederationVersion())
		}
		_, err := op.Request(ping, nil, time.Second)
		return err
	})
	// It takes the gateway's query (its backend is not there: the answer is
	// the provider side's refusal, from justice's adapter).
	msg, err := gw.Request(query, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("version 1: justice's provider side does not answer the gateway: %v", err)
	}
	if msg.Header.Get(bus.HeaderStatus) == "" {
		t.Fatalf("version 1: not the provider side's answer: %+v", msg.Header)
	}
}
