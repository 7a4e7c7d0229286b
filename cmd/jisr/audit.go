package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
)

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
