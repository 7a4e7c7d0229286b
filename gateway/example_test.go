package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/decision"
	civilv1 "github.com/jisr-bus/jisr/proto/gen/jisr/civilregistry/v1"
)

// noTokens is a ConsentVerifier that accepts no token (the gateway node uses
// consent.Verifier). The query below rests on a mandate, which needs none.
type noTokens struct{}

func (noTokens) Verify(context.Context, *decision.Request) (*decision.Grant, error) {
	return nil, decision.Refuse(codes.Unauthenticated, decision.ReasonConsentRequired, "no tokens here")
}

// printedLog is an AuditLog that prints each decision (the gateway node
// uses audit.Log, which makes it durable in JetStream).
type printedLog struct{}

func (printedLog) Append(_ context.Context, d *decision.Decision) error {
	fmt.Printf("audit: %s → %s %s allowed=%t reason=%s basis=%q fields=%v\n", d.Consumer, d.Provider, d.Method, d.Allowed, d.Reason, d.LegalBasis, d.Fields)
	return nil
}

// A gateway decides the queries members publish on jisr.q.<consumer>.…:
// here CNSS asks the civil registry whether a pensioner is alive, under the
// test federation's mandate, and then asks for a purpose no rule allows.
// Each decision is audited before the consumer gets its answer.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "gateway-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	env, err := bustest.Run(dir) // the test federation on an embedded NATS server
	if err != nil {
		fmt.Println(err)
		return
	}
	defer env.Server.Shutdown()
	conns := map[string]*nats.Conn{}
	for _, id := range []string{"gateway", "civil-registry", "cnss"} {
		if conns[id], err = env.DialAs(id); err != nil {
			fmt.Println(err)
			return
		}
		defer conns[id].Close()
	}

	gw, err := gateway.New(gateway.Config{
		Federation: env.Fed, Keyer: env.Keyer, Conn: conns["gateway"],
		Consent: noTokens{}, Audit: printedLog{}, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := gw.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer gw.Stop(ctx)

	// The civil registry's side (its adapter, in a federation).
	sub, err := conns["civil-registry"].QueueSubscribe("jisr.p.civil-registry.>", "civil-registry", func(m *nats.Msg) {
		reply, _ := proto.Marshal(&civilv1.IsAliveResponse{Alive: true})
		_ = bus.Respond(m, reply, nil)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Unsubscribe()
	if err := conns["civil-registry"].Flush(); err != nil {
		fmt.Println(err)
		return
	}

	// CNSS's side: the subject names the consumer, provider, service,
	// method and the citizen's key; the payload carries the eID.
	const eid = "BK482913"
	subj, _ := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry",
		Method: "IsAlive", CKey: env.Keyer.CKey(eid)}.Subject()
	data, _ := proto.Marshal(&civilv1.IsAliveRequest{Eid: eid})
	for _, purpose := range []string{"pension-continuity", "marketing"} {
		msg := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
		msg.Header.Set(bus.HeaderPurpose, purpose)
		reply, err := bus.Call(ctx, conns["cnss"], msg)
		if err != nil {
			st := status.Convert(err)
			fmt.Println(purpose+":", st.Code(), decision.ReasonOf(st))
			continue
		}
		var resp civilv1.IsAliveResponse
		_ = proto.Unmarshal(reply.Data, &resp)
		fmt.Println(purpose+": alive =", resp.GetAlive())
	}
	// Output:
	// audit: cnss → civil-registry IsAlive allowed=true reason=ALLOWED basis="mandate" fields=[alive]
	// pension-continuity: alive = true
	// audit: cnss → civil-registry IsAlive allowed=false reason=PURPOSE_NOT_ALLOWED basis="" fields=[]
	// marketing: PermissionDenied PURPOSE_NOT_ALLOWED
}
