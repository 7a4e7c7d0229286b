package auditor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/export"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
)

// ErrVerifyFailed is returned by Check when the logs do not verify.
var ErrVerifyFailed = errors.New("audit verification FAILED")

// CheckConfig is what `jisr audit verify` checks, and against what.
type CheckConfig struct {
	TrustDomain string
	// KeysDir holds the logs' trusted public keys, <instance>.pub.
	KeysDir string
	// Trusted are signed checkpoint files the logs must still extend.
	Trusted []string
	// File is an export to verify instead of the live streams.
	File string
	// SeenDir keeps the checkpoints seen at the last successful
	// verification of the live streams ("" = the default, "none" = none).
	SeenDir string
	// Strict also fails on messages that are not records.
	Strict bool
	// Open opens the live streams (when File is empty).
	Open func(context.Context) (*Streams, func(), error)
	// Progress shows how far it is; Done is called when reading ends.
	Progress interface {
		Progress
		Done()
	}
}

// Check verifies the live streams or an export, writes the report to out,
// and keeps the checkpoints seen after a successful verification.
func Check(ctx context.Context, cfg CheckConfig, out io.Writer) error {
	v, seen, err := cfg.verifier()
	if err != nil {
		return err
	}
	if cfg.File != "" {
		err = verifyFile(cfg.File, v, cfg.Progress)
	} else {
		err = verifyStreams(ctx, cfg.Open, v, cfg.Progress)
	}
	cfg.Progress.Done()
	if err != nil {
		return err
	}
	rep := v.Finish()
	WriteReport(out, rep)
	if !rep.OK() {
		return fmt.Errorf("%w: %d problem(s)", ErrVerifyFailed, len(rep.Problems))
	}
	if cfg.Strict && len(rep.Foreign) > 0 {
		return fmt.Errorf("%w: %d message(s) that are not records (--strict)", ErrVerifyFailed, len(rep.Foreign))
	}
	if err := seen.Keep(rep); err != nil {
		return fmt.Errorf("verified, but the checkpoints seen could not be kept: %w", err)
	}
	return nil
}

// verifier builds the verifier from the trusted keys and checkpoints, and
// opens the seen checkpoints (none for an export, a snapshot).
func (cfg CheckConfig) verifier() (*verify.Verifier, *verify.Seen, error) {
	keys, err := checkpoint.LoadPublicKeys(cfg.KeysDir)
	if err != nil {
		return nil, nil, fmt.Errorf("trusted keys: %w (set --keys to the directory of the logs' .pub files)", err)
	}
	if keys.Len() == 0 {
		return nil, nil, fmt.Errorf("no trusted keys (*.pub) in %s", cfg.KeysDir)
	}
	v, err := verify.New(verify.Config{TrustDomain: cfg.TrustDomain, Keys: keys})
	if err != nil {
		return nil, nil, err
	}
	for _, path := range cfg.Trusted {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("--trusted: %w", err)
		}
		if _, err := v.Trust(string(b), path); err != nil {
			return nil, nil, fmt.Errorf("--trusted: %w", err)
		}
	}
	if cfg.File != "" { // an export is a snapshot: only --trusted applies to it
		return v, nil, nil
	}
	seen, err := OpenSeen(cfg.SeenDir, cfg.TrustDomain, keys)
	if err != nil {
		return nil, nil, err
	}
	return v, seen, seen.Trust(v)
}

func verifyStreams(ctx context.Context, open func(context.Context) (*Streams, func(), error), v *verify.Verifier, prog Progress) error {
	st, closeFn, err := open(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	return st.Verify(ctx, v, prog)
}

func verifyFile(path string, v *verify.Verifier, prog Progress) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	prog.Start("export file (bytes)", uint64(st.Size()))
	return export.LoadInto(f, path, v, prog.Add)
}

// seenDirDefault is <user config dir>/jisr/audit-seen.
func seenDirDefault() (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("--seen-dir: no user config directory (%w): set --seen-dir or JISR_AUDIT_SEEN_DIR", err)
	}
	return filepath.Join(base, "jisr", "audit-seen"), nil
}

// OpenSeen returns the seen checkpoints kept in dir ("" = <user config
// dir>/jisr/audit-seen, "none" = none: nil).
func OpenSeen(dir, trustDomain string, keys *checkpoint.Keys) (*verify.Seen, error) {
	if dir == "none" {
		return nil, nil
	}
	if dir == "" {
		var err error
		if dir, err = seenDirDefault(); err != nil {
			return nil, err
		}
	}
	return verify.OpenSeen(dir, trustDomain, keys), nil
}

// ParseWhen reads a time as --since and --until take it: RFC 3339, a date
// (2026-11-23), or a duration before now (24h); "" is the zero time.
func ParseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not RFC 3339, a date or a duration", v)
}
