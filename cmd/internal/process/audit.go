package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/stream"
)

// AuditKeyDir is where the checkpoint keys of the audit logs live: one
// <instance>.key (private, 0600) and <instance>.pub per gateway instance.
func AuditKeyDir(certsDir string) string { return filepath.Join(certsDir, "audit") }

// EnsureAuditKey creates the checkpoint signing key of a gateway instance if
// it does not exist yet (`jisr certs init` and the gateway's first start call
// it). It reports whether it created the key.
func EnsureAuditKey(certsDir string, fed *federation.Federation, instance string) (bool, error) {
	_, created, err := checkpoint.EnsureKey(AuditKeyDir(certsDir), instance, checkpoint.Origin(fed.TrustDomain.Name(), instance))
	return created, err
}

// TrustedCheckpointPath is where a gateway instance keeps the last checkpoint
// it published, outside NATS: <data>/audit/<instance>.checkpoint (a signed
// note; `jisr audit verify --trusted` reads it too).
func TrustedCheckpointPath(dataDir, instance string) string {
	return filepath.Join(dataDir, "audit", instance+".checkpoint")
}

// AuditSettings is the audit's configuration, from the --audit-* flags,
// validated once at start.
type AuditSettings struct {
	Stream          stream.Config
	CheckpointEvery time.Duration
}

// AuditFlags are the audit's settings as the gateway, `jisr nats init` and
// `jisr dev` take them: each flag defaults to its environment variable,
// named in its help.
type AuditFlags struct {
	MaxAge, CheckpointMaxAge, CheckpointEvery, MaxBytes, Replicas string
}

// Settings validates the flags.
func (a AuditFlags) Settings() (AuditSettings, error) {
	s := AuditSettings{CheckpointEvery: 15 * time.Second}
	bad := func(name, v, want string) error {
		return UsageError{fmt.Errorf("--%s=%q: %s", name, v, want)}
	}
	dur := func(name, v string, into *time.Duration) error {
		if v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return bad(name, v, "want a positive duration such as 87600h")
			}
			*into = d
		}
		return nil
	}
	if err := errors.Join(dur("audit-max-age", a.MaxAge, &s.Stream.MaxAge),
		dur("audit-checkpoint-max-age", a.CheckpointMaxAge, &s.Stream.CheckpointMaxAge),
		dur("audit-checkpoint-every", a.CheckpointEvery, &s.CheckpointEvery)); err != nil {
		return s, err
	}
	if v := a.MaxBytes; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return s, bad("audit-max-bytes", v, "want a number of bytes (0 = unlimited)")
		}
		s.Stream.MaxBytes = n
	}
	if v := a.Replicas; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || (n != 1 && n != 3 && n != 5) {
			return s, bad("audit-replicas", v, "want 1, 3 or 5")
		}
		s.Stream.Replicas = n
	}
	// The demo login is no longer an environment default: only
	// `jisr dev --demo-login` turns it on. Refuse the old switch rather
	// than let an operator believe it still does something.
	if v := os.Getenv("JISR_CITIZEN_LOGIN"); v != "" && v != "off" {
		return s, UsageError{fmt.Errorf("JISR_CITIZEN_LOGIN=%q: no longer read: citizens sign in with --oidc-*, and only `jisr dev --demo-login` has a demo login", v)}
	}
	if _, _, err := stream.StreamConfigs(s.Stream); err != nil {
		return s, UsageError{err}
	}
	return s, nil
}
