package bus_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/bus"
	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/certs/svid"
)

// Connect dials the federation's NATS server over mTLS as one identity,
// with the SVID of that identity, and checks that the server is the
// federation's (its SVID). Here the server is the embedded one, with a dev
// CA, that the tests use.
func ExampleConnect() {
	dir, err := os.MkdirTemp("", "bus-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	env, err := bustest.Run(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer env.Server.Shutdown()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The files `jisr certs init` writes (<certs>/svid/member-cnss.pem and
	// .key, <certs>/bundle.pem), reloaded when they rotate.
	cert, key := svid.Paths(env.Dir, env.ID("cnss"))
	src, err := svid.NewFileSource(ctx, cert, key, svid.BundlePath(env.Dir))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	nc, err := bus.Connect(ctx, bus.Config{URL: env.URL, Identity: "cnss", Source: src, ServerID: env.Fed.ID("nats")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	fmt.Println(nc.IsConnected(), subject.Inbox("cnss"))
	// Output: true _INBOX.cnss
}

// Call is a request over NATS that speaks gRPC statuses: the gateway calls
// a provider on its provider subject, and the provider's status (or the
// transport's failure) comes back as a gRPC status error.
func ExampleCall() {
	dir, err := os.MkdirTemp("", "bus-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	env, err := bustest.Run(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer env.Server.Shutdown()
	gateway, err := env.DialAs("gateway")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer gateway.Close()
	provider, err := env.DialAs("civil-registry")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer provider.Close()

	// The civil registry answers on jisr.p.civil-registry.>: "known" for
	// one citizen key, NotFound for any other.
	sub, err := provider.QueueSubscribe("jisr.p.civil-registry.>", "civil-registry", func(m *nats.Msg) {
		if m.Subject[len(m.Subject)-5:] == "CKEY1" {
			_ = bus.Respond(m, []byte("known"), nil)
			return
		}
		_ = bus.Respond(m, nil, status.New(codes.NotFound, "no such person"))
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Unsubscribe()
	if err := provider.Flush(); err != nil {
		fmt.Println(err)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ck := range []string{"CKEY1", "CKEY2"} {
		subj, err := subject.Query{Consumer: "cnss", Provider: "civil-registry", Service: "jisr_civilregistry_v1_CivilRegistry", Method: "IsAlive", CKey: ck}.ProviderSubject()
		if err != nil {
			fmt.Println(err)
			return
		}
		reply, err := bus.Call(ctx, gateway, &nats.Msg{Subject: subj, Data: []byte("request")})
		if err != nil {
			st := status.Convert(err)
			fmt.Println(ck, st.Code(), st.Message())
			continue
		}
		fmt.Println(ck, string(reply.Data))
	}
	// Output:
	// CKEY1 known
	// CKEY2 NotFound no such person
}
