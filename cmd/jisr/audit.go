package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway"
	"github.com/jisr-bus/jisr/gateway/audit"
	"github.com/jisr-bus/jisr/gateway/audit/accesslog"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/index"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
)

// auditParts is the audit as the gateway process hosts it: the log every
// decision is appended to, the citizen's access log routes, and Close.
type auditParts struct {
	Log    gateway.AuditLog
	Routes map[string]http.Handler         // mounted on the gateway HTTP mux
	Close  func(ctx context.Context) error // flushes, publishes the final checkpoint
	// RegisterGRPC adds the access log's gRPC service to the gateway's gRPC server.
	RegisterGRPC func(*grpc.Server)
}

// auditKeyDir is where the checkpoint keys of the audit logs live: one
// <instance>.key (private, 0600) and <instance>.pub per gateway instance.
func auditKeyDir(certsDir string) string { return filepath.Join(certsDir, "audit") }

// ensureAuditKey creates the checkpoint signing key of a gateway instance if
// it does not exist yet (`jisr certs init` and the gateway's first start call
// it). It reports whether it created the key.
func ensureAuditKey(certsDir string, fed *federation.Federation, instance string) (bool, error) {
	_, created, err := checkpoint.EnsureKey(auditKeyDir(certsDir), instance, checkpoint.Origin(fed.TrustDomain.Name(), instance))
	return created, err
}

// trustedCheckpointPath is where a gateway instance keeps the last checkpoint
// it published, outside NATS: <data>/audit/<instance>.checkpoint (a signed
// note; `jisr audit verify --trusted` reads it too).
func trustedCheckpointPath(dataDir, instance string) string {
	return filepath.Join(dataDir, "audit", instance+".checkpoint")
}

// auditSettings is the audit's configuration, from the environment, read
// and validated once at start.
type auditSettings struct {
	stream          stream.Config
	checkpointEvery time.Duration
}

func loadAuditSettings() (auditSettings, error) {
	s := auditSettings{checkpointEvery: 15 * time.Second}
	bad := func(name, v, want string) error {
		return usageError{fmt.Errorf("%s=%q: %s", name, v, want)}
	}
	dur := func(name string, into *time.Duration) error {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return bad(name, v, "want a positive duration such as 87600h")
			}
			*into = d
		}
		return nil
	}
	if err := dur("JISR_AUDIT_MAX_AGE", &s.stream.MaxAge); err != nil {
		return s, err
	}
	if err := dur("JISR_AUDIT_CHECKPOINT_MAX_AGE", &s.stream.CheckpointMaxAge); err != nil {
		return s, err
	}
	if err := dur("JISR_AUDIT_CHECKPOINT_EVERY", &s.checkpointEvery); err != nil {
		return s, err
	}
	if v := os.Getenv("JISR_AUDIT_MAX_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return s, bad("JISR_AUDIT_MAX_BYTES", v, "want a number of bytes (0 = unlimited)")
		}
		s.stream.MaxBytes = n
	}
	if v := os.Getenv("JISR_AUDIT_REPLICAS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 1 && n != 3 && n != 5) {
			return s, bad("JISR_AUDIT_REPLICAS", v, "want 1, 3 or 5")
		}
		s.stream.Replicas = n
	}
	// The demo login is no longer an environment default: only
	// `jisr dev --demo-login` turns it on. Refuse the old switch rather
	// than let an operator believe it still does something.
	if v := os.Getenv("JISR_CITIZEN_LOGIN"); v != "" && v != "off" {
		return s, bad("JISR_CITIZEN_LOGIN", v, "no longer read: citizens sign in with --oidc-*, and only `jisr dev --demo-login` has a demo login")
	}
	if _, _, err := stream.StreamConfigs(s.stream); err != nil {
		return s, usageError{err}
	}
	return s, nil
}

// startAudit opens this instance's audit log on the gateway's connection
// (the streams `jisr nats init` created; resuming the log after a restart),
// starts the index that proves records to citizens, and builds the citizen's
// access log routes.
func startAudit(ctx context.Context, g *globals, nc *nats.Conn, instance string, citizens accesslog.Authenticator) (p *auditParts, err error) {
	settings, err := loadAuditSettings()
	if err != nil {
		return nil, err
	}
	fed, err := g.federation()
	if err != nil {
		return nil, err
	}
	td := fed.TrustDomain.Name()
	kp, created, err := checkpoint.EnsureKey(auditKeyDir(g.certsDir), instance, checkpoint.Origin(td, instance))
	if err != nil {
		return nil, fmt.Errorf("audit: checkpoint key: %w", err)
	}
	if created {
		g.log.Info("created the audit log's checkpoint key: publish the .pub file to auditors",
			"key", filepath.Join(auditKeyDir(g.certsDir), instance+".pub"))
	}
	var closers []func(context.Context) error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i](context.WithoutCancel(ctx))
			}
		}
	}()
	dir := filepath.Join(g.dataDir, "audit")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	l, err := audit.Open(ctx, nc, td, instance, kp,
		audit.WithLogger(g.log), audit.WithStream(settings.stream), audit.WithCheckpointEvery(settings.checkpointEvery),
		audit.WithTrustedCheckpoint(trustedCheckpointPath(g.dataDir, instance)))
	if err != nil {
		return nil, err
	}
	closers = append(closers, l.Close)

	// The index and the access log.
	keys, err := checkpoint.LoadPublicKeys(auditKeyDir(g.certsDir))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	records, err := js.Stream(ctx, subject.AuditStream)
	if err != nil {
		return nil, err
	}
	ckpts, err := js.Stream(ctx, subject.CheckpointStream)
	if err != nil {
		return nil, err
	}
	store, err := index.OpenStore(filepath.Join(dir, "index-"+instance+".db"))
	if err != nil {
		return nil, err
	}
	ix := index.New(store, records, ckpts, td, keys, g.log)
	ictx, stopIndex := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { ix.Run(ictx) })
	closers = append(closers, func(context.Context) error {
		stopIndex()
		wg.Wait()
		return store.Close()
	})
	svc, err := accesslog.New(accesslog.Config{
		Federation: fed, Records: records, Index: ix, Keys: keys, Auth: citizens, Log: g.log,
	})
	if err != nil {
		return nil, err
	}
	var once sync.Once
	var closeErr error
	return &auditParts{
		Log:          l,
		Routes:       svc.Routes(),
		RegisterGRPC: svc.Register,
		Close: func(ctx context.Context) error {
			once.Do(func() {
				var errs []error
				for i := len(closers) - 1; i >= 0; i-- {
					errs = append(errs, closers[i](ctx))
				}
				closeErr = errors.Join(errs...)
			})
			return closeErr
		},
	}, nil
}
