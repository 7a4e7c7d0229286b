package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/cmd/internal/process"
	eventsv1 "github.com/jisr-bus/jisr/proto/gen/jisr/events/v1"
	jisrv1 "github.com/jisr-bus/jisr/proto/gen/jisr/v1"
)

// A signed federation version that moves an event rule from one consumer
// to another is in force for events without a restart: at version 0 health
// receives address changes and tax none (its adapter delivers nothing);
// version 1 gives the rule to tax — the next address change is stored in
// tax's stream and tax's running adapter, which had no event rule when it
// started, delivers it to its backend — and removes health's: health's
// stream gets it no more (fail closed).
func TestEventRulesFollowTheSignedFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-short): runs a gateway and an adapter; make test and CI run it")
	}
	dir := t.TempDir()
	logs := &syncBuffer{}
	// Version 0: the test federation with tax's address rule given to
	// health; version 1 is the test federation itself.
	base := mustReadFile(t, "../testdata/federation.yaml")
	v0 := bytes.Replace(base, []byte("  - name: tax-address\n    consumer: tax\n"), []byte("  - name: health-address\n    consumer: health\n"), 1)
	if bytes.Equal(v0, base) {
		t.Fatal("no tax-address rule to move in the test federation")
	}
	fedPath := filepath.Join(dir, "federation-v0.yaml")
	if err := os.WriteFile(fedPath, v0, 0o644); err != nil {
		t.Fatal(err)
	}
	copyDescriptorSets(t, "../testdata/federation.yaml", dir)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	g, gw, civil := startEventHub(ctx, t, fedPath, dir, logs)
	// Tax's adapter, with an event sink but no event rule yet.
	sinkLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taxSink := &sink{applied: map[string]bool{}, order: map[string][]int{}}
	srv := grpc.NewServer()
	eventsv1.RegisterEventSinkServer(srv, taxSink)
	go func() { _ = srv.Serve(sinkLis) }()
	t.Cleanup(srv.Stop)
	tax, err := process.StartAdapter(ctx, g, process.AdapterOptions{Member: "tax", Listen: "127.0.0.1:0", Backend: sinkLis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tax.Stop(context.Background()) })
	cc, err := grpc.NewClient(civil.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	pub := eventsv1.NewEventPublisherClient(cc)
	keyer, err := g.Keyer()
	if err != nil {
		t.Fatal(err)
	}
	op, src, err := g.Connect(ctx, subject.Operator)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { op.Close(); src.Close() }()
	js, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}

	eid := eidN(7)
	ck := keyer.CKey(eid)
	publish := func(id string) int32 {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := pub.Publish(cctx, &eventsv1.PublishRequest{Event: &eventsv1.Event{Id: id, Time: timestamppb.Now(), Eid: eid,
			Payload: &eventsv1.Event_AddressChanged{AddressChanged: &eventsv1.AddressChanged{
				Place: &jisrv1.Place{Commune: "Agdal-Ryad", Province: "Rabat", Country: "MA"}, Street: "12 avenue de France"}}}})
		if err != nil {
			t.Fatalf("publish %s: %v\n%s", id, err, logs.String())
		}
		return out.GetDeliveries()
	}
	// lastIn is the id and rule of the last address change about the
	// citizen in member's stream ("" when none).
	lastIn := func(member string) (id, rule string) {
		t.Helper()
		st, err := js.Stream(ctx, subject.EventStream(member))
		if err != nil {
			t.Fatal(err)
		}
		subj, err := subject.Event{Consumer: member, Publisher: "civil-registry", Type: "AddressChanged", CKey: ck}.DeliverySubject()
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return "", ""
		}
		if err != nil {
			t.Fatal(err)
		}
		ev := &eventsv1.Event{}
		if err := proto.Unmarshal(m.Data, ev); err != nil {
			t.Fatal(err)
		}
		return ev.GetId(), m.Header.Get("Jisr-Event-Rule")
	}

	// Version 0 (the file): health-address delivers address changes to
	// health, none to tax.
	if n := publish("reload-before-0001"); n != 1 {
		t.Fatalf("before the new version: %d deliveries, want 1 (health)", n)
	}
	if id, rule := lastIn("health"); id != "reload-before-0001" || rule != "health-address" {
		t.Fatalf("health's stream before the new version: %q under %q", id, rule)
	}
	if id, _ := lastIn("tax"); id != "" {
		t.Fatalf("tax received %s before a rule gave it address changes", id)
	}

	// Version 1: the test federation, where the rule is tax's.
	bundle := filepath.Join(dir, "v1.json")
	for _, args := range [][]string{
		{"--federation", "../testdata/federation.yaml", "federation", "sign", "--version", "1", "-o", bundle},
		{"--federation", fedPath, "federation", "publish", bundle},
	} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--certs", g.CertsDir, "--nats", g.NATSURL, "--log-level", "error"}, args...))
		if err := root.Execute(); err != nil {
			t.Fatalf("jisr %v: %v\n%s", args, err, out.String())
		}
	}
	bustest.Eventually(t, 30*time.Second, func() error {
		return bustest.Check(gw.Gateway().FederationVersion() == 1 && tax.FederationVersion() == 1,
			fmt.Sprintf("the gateway is at version %d, tax's adapter at %d", gw.Gateway().FederationVersion(), tax.FederationVersion()))
	})

	// The next address change: tax's, not health's — no restart.
	if n := publish("reload-after-00001"); n != 1 {
		t.Fatalf("after the new version: %d deliveries, want 1 (tax)", n)
	}
	if id, rule := lastIn("tax"); id != "reload-after-00001" || rule != "tax-address" {
		t.Fatalf("tax's stream after the new version: %q under %q, want reload-after-00001 under tax-address", id, rule)
	}
	if id, _ := lastIn("health"); id != "reload-before-0001" {
		t.Fatalf("health received %s after the version that removed its rule", id)
	}
	// Tax's adapter started delivering with the version: its backend has
	// the event, minimised to the rule, and only it.
	bustest.Eventually(t, 30*time.Second, func() error {
		return bustest.Check(taxSink.count() == 1, fmt.Sprintf("tax's backend has %d events\n%s", taxSink.count(), logs.String()))
	})
	taxSink.mu.Lock()
	defer taxSink.mu.Unlock()
	if !taxSink.applied["reload-after-00001"] || taxSink.calls != 1 {
		t.Fatalf("tax's backend: %v in %d calls, want reload-after-00001 once", taxSink.applied, taxSink.calls)
	}
}
