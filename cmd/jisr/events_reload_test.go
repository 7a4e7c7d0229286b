package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
// to another is in force for events at the running gateway without a
// restart: the next address change reaches health's stream (the rule it
// adds) and no longer tax's (the rule it removes: fail closed), each
// delivery under the version's rule.
func TestEventRulesFollowTheSignedFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("-short (make test-short): runs a gateway and an adapter; make test and CI run it")
	}
	dir := t.TempDir()
	logs := &syncBuffer{}
	fedPath := "../testdata/federation.yaml"
	g := &process.Env{FederationPath: fedPath, CertsDir: filepath.Join(dir, "certs"), DataDir: dir,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	fed, err := g.Federation()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := process.InitCerts(g, fed); err != nil {
		t.Fatal(err)
	}
	ns, err := process.StartNATS(context.Background(), g, process.NATSOptions{Listen: "127.0.0.1:-1", Sync: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	g.NATSURL = ns.ClientURL()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := process.NATSInit(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	gw, err := process.StartGateway(ctx, g, process.GatewayOptions{HTTPAddr: "127.0.0.1:0", Instance: "gw-1"})
	if err != nil {
		t.Fatalf("gateway: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() { _ = gw.Stop(context.Background()) })
	civil, err := process.StartAdapter(ctx, g, process.AdapterOptions{Member: "civil-registry", Listen: "127.0.0.1:0", Backend: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = civil.Stop(context.Background()) })
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

	// Version 0 (the file): tax-address delivers address changes to tax.
	if n := publish("reload-before-0001"); n != 1 {
		t.Fatalf("before the new version: %d deliveries, want 1 (tax)", n)
	}
	if id, rule := lastIn("tax"); id != "reload-before-0001" || rule != "tax-address" {
		t.Fatalf("tax's stream before the new version: %q under %q", id, rule)
	}
	if id, _ := lastIn("health"); id != "" {
		t.Fatalf("health received %s before a rule gave it address changes", id)
	}

	// Version 1: the rule goes to health instead (tax's is removed).
	base := mustReadFile(t, fedPath)
	v1 := bytes.Replace(base, []byte("  - name: tax-address\n    consumer: tax\n"), []byte("  - name: health-address\n    consumer: health\n"), 1)
	if bytes.Equal(v1, base) {
		t.Fatal("no tax-address rule to move in the test federation")
	}
	v1Path := filepath.Join(dir, "federation-v1.yaml")
	if err := os.WriteFile(v1Path, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "v1.json")
	for _, args := range [][]string{
		{"--federation", v1Path, "federation", "sign", "--version", "1", "-o", bundle},
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
		return bustest.Check(gw.Gateway().FederationVersion() == 1, fmt.Sprintf("the gateway is at version %d", gw.Gateway().FederationVersion()))
	})

	// The next address change: health's, not tax's — no restart.
	if n := publish("reload-after-00001"); n != 1 {
		t.Fatalf("after the new version: %d deliveries, want 1 (health)", n)
	}
	if id, rule := lastIn("health"); id != "reload-after-00001" || rule != "health-address" {
		t.Fatalf("health's stream after the new version: %q under %q, want reload-after-00001 under health-address", id, rule)
	}
	if id, _ := lastIn("tax"); id != "reload-before-0001" {
		t.Fatalf("tax received %s after the version that removed its rule", id)
	}
}
