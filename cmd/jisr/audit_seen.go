package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
)

// seenDirDefault is <user config dir>/jisr/audit-seen (--seen-dir itself
// defaults to $JISR_AUDIT_SEEN_DIR).
func seenDirDefault() (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("--seen-dir: no user config directory (%w): set --seen-dir or JISR_AUDIT_SEEN_DIR", err)
	}
	return filepath.Join(base, "jisr", "audit-seen"), nil
}

// openSeen returns the seen checkpoints kept in dir ("" = the default,
// "none" = none: nil).
func openSeen(dir, trustDomain string, keys *checkpoint.Keys) (*verify.Seen, error) {
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
