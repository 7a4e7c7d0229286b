package audit_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/bustest"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
	"github.com/jisr-bus/jisr/gateway/decision"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// Open opens one gateway replica's log in the audit stream: Append returns
// once a decision's record is durable, and a checkpoint signs the Merkle
// tree of the records so far. Reopened, the log resumes where it was.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "audit-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	env, err := bustest.Run(dir) // an embedded NATS server with JetStream
	if err != nil {
		fmt.Println(err)
		return
	}
	defer env.Server.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Only the operator creates the streams (`jisr nats init`); the gateway
	// opens them and refuses to start without them.
	operator, err := env.DialAs("operator")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer operator.Close()
	if _, err := natsstate.Init(ctx, operator, stream.Config{}); err != nil {
		fmt.Println(err)
		return
	}
	gw, err := env.DialAs("gateway")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer gw.Close()

	// The log's checkpoint key is named after its origin.
	td := env.Fed.TrustDomain.Name()
	key, _, err := checkpoint.EnsureKey(filepath.Join(dir, "audit"), "gw-1", checkpoint.Origin(td, "gw-1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	quiet := audit.WithLogger(slog.New(slog.DiscardHandler))
	log, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: "gw-1", Key: key}, quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	now := time.Now().UTC()
	for _, allowed := range []bool{true, false} {
		d := &decision.Decision{Time: now, VisibleAt: now, Consumer: "cnss", Provider: "civil-registry",
			Service: "jisr.civilregistry.v1.CivilRegistry", Method: "IsAlive", CKey: env.Keyer.CKey("BK482913"),
			Purpose: "pension-continuity", LegalBasis: "mandate", Allowed: allowed, Code: codes.OK, Reason: decision.ReasonAllowed}
		if !allowed {
			d.Code, d.Reason = codes.PermissionDenied, "PURPOSE_NOT_ALLOWED"
		}
		if err := log.Append(ctx, d); err != nil { // durable when it returns nil
			fmt.Println(err)
			return
		}
	}
	if err := log.Checkpoint(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(log.Origin())
	fmt.Println(log.Size())
	if err := log.Close(ctx); err != nil {
		fmt.Println(err)
		return
	}

	again, err := audit.Open(ctx, audit.Config{Conn: gw, TrustDomain: td, LogID: "gw-1", Key: key}, quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer again.Close(ctx)
	fmt.Println(again.Size())
	// Output:
	// jisr.internal/audit/gw-1
	// 2 2
	// 2 2
}
