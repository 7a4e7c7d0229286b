package main_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/minimise"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
	"github.com/jisr-bus/jisr/services/adapter"
	"github.com/jisr-bus/jisr/services/adapter/adaptertest"
)

// The leaky backend's unknown fields behind the real adapters and the real
// gateway (moved from services/adapter, whose own tests keep the provider
// side's check without the gateway).

// auditRecorder keeps the gateway's decisions.
type auditRecorder struct {
	mu   sync.Mutex
	recs []decision.Decision
}

func (a *auditRecorder) Append(_ context.Context, d *decision.Decision) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recs = append(a.recs, *d)
	return nil
}

func (a *auditRecorder) last() decision.Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.recs[len(a.recs)-1]
}

// TestUnknownFieldsNeverCrossTheBus runs a leaky backend behind the real
// provider adapter and the real gateway, and a consumer that pads its
// requests: the consumer receives none of the backend's unknown fields, the
// backend none of the consumer's, and the audit record lists exactly the
// fields of the bytes that reached the consumer.
func TestUnknownFieldsNeverCrossTheBus(t *testing.T) {
	env := bustest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	audit := &auditRecorder{}
	gw, err := gateway.New(gateway.Config{Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "gateway"), Consent: allow{}, Audit: audit})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop(context.Background()) })

	be := &adaptertest.LeakyRegistry{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bs := grpc.NewServer()
	civilv1.RegisterCivilRegistryServer(bs, be)
	go bs.Serve(lis)
	t.Cleanup(bs.Stop)
	prov, err := adapter.New(adapter.Config{Member: "civil-registry", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "civil-registry"), Backend: lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := prov.StartProvider(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prov.Stop(context.Background()) })
	cons, err := adapter.New(adapter.Config{Member: "cnss", Federation: env.Fed, Keyer: env.Keyer, Conn: env.Connect(t, "cnss")})
	if err != nil {
		t.Fatal(err)
	}
	alis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := cons.GRPCServer()
	go srv.Serve(alis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(alis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := civilv1.NewCivilRegistryClient(cc)
	const eid = "BK482913"

	for _, tc := range []struct {
		name    string
		purpose string
		call    func(ctx context.Context) (proto.Message, error)
		want    []string // released fields
	}{
		{"rule with a field list", "amo-enrolment", func(ctx context.Context) (proto.Message, error) {
			req := &civilv1.GetPersonRequest{Eid: eid}
			adaptertest.Smuggle(req, 7)
			return client.GetPerson(ctx, req)
		}, []string{
			"person.birth.date.day", "person.birth.date.month", "person.birth.date.year",
			"person.birth.place.commune", "person.birth.place.country", "person.eid",
			"person.names.arabic.family", "person.names.arabic.given", "person.names.latin.family", "person.names.latin.given",
			"person.sex", "person.vital_status",
		}},
		{"repeated messages, relatives' eIDs not named", "amo-enrolment", func(ctx context.Context) (proto.Message, error) {
			req := &civilv1.GetHouseholdRequest{Eid: eid}
			adaptertest.Smuggle(req, 7)
			return client.GetHousehold(ctx, req)
		}, []string{"household.members.relation"}},
		{"rule without a field list (mandate)", "pension-continuity", func(ctx context.Context) (proto.Message, error) {
			req := &civilv1.IsAliveRequest{Eid: eid}
			adaptertest.Smuggle(req, 7)
			return client.IsAlive(ctx, req)
		}, []string{"alive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := metadata.Pairs("jisr-purpose", tc.purpose, "jisr-consent", "ok")
			resp, err := tc.call(metadata.NewOutgoingContext(ctx, md))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := proto.Marshal(resp)
			if strings.Contains(string(raw), "HIV") || adaptertest.HasUnknown(resp.ProtoReflect()) {
				t.Fatalf("the consumer received unknown fields: %x", raw)
			}
			rec := audit.last()
			got := minimise.Released(resp.ProtoReflect())
			if !slices.Equal(rec.Fields, got) || !slices.Equal(got, tc.want) {
				t.Fatalf("audit says %v, consumer got %v, want %v", rec.Fields, got, tc.want)
			}
		})
	}
	t.Run("the household keeps its size", func(t *testing.T) {
		md := metadata.Pairs("jisr-purpose", "amo-enrolment", "jisr-consent", "ok")
		resp, err := client.GetHousehold(metadata.NewOutgoingContext(ctx, md), &civilv1.GetHouseholdRequest{Eid: eid})
		if err != nil {
			t.Fatal(err)
		}
		ms := resp.GetHousehold().GetMembers()
		if len(ms) != 3 || ms[1].GetRelation() != civilv1.Relation_RELATION_SPOUSE || ms[1].GetEid() != "" || ms[1].GetGivenName() != "" {
			t.Fatalf("household %v", resp)
		}
	})
	if seen := be.UnknownSeen(); len(seen) < 3 || slices.ContainsFunc(seen, func(n int) bool { return n != 0 }) {
		t.Fatalf("unknown request bytes seen by the backend: %v", seen)
	}
}
