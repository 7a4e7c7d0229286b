package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
	"github.com/jisr-bus/jisr/gateway/audit/verify"
)

// seenCheckpoints is the auditor's memory: for each log (and key), the
// largest checkpoint `jisr audit verify` verified on the live streams, kept
// on the auditor's own disk. The next verification fails when a log no
// longer extends it, so a log erased or cut short together with its
// checkpoints cannot pass unseen. One file per log key:
// <dir>/<origin with / as _>+<key hash>.checkpoint, the signed note.
type seenCheckpoints struct {
	dir  string
	td   string
	keys map[string]string // origin → file name prefix (name+hash)
	size map[string]uint64 // origin → size of the checkpoint seen
}

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
func openSeen(dir, trustDomain string, keys *checkpoint.Keys) (*seenCheckpoints, error) {
	if dir == "none" {
		return nil, nil
	}
	if dir == "" {
		var err error
		if dir, err = seenDirDefault(); err != nil {
			return nil, err
		}
	}
	s := &seenCheckpoints{dir: dir, td: trustDomain, keys: map[string]string{}, size: map[string]uint64{}}
	for _, vk := range keys.VerifierKeys() {
		parts := strings.SplitN(vk, "+", 3)
		if len(parts) != 3 {
			continue
		}
		s.keys[parts[0]] = strings.ReplaceAll(parts[0], "/", "_") + "+" + parts[1]
	}
	return s, nil
}

func (s *seenCheckpoints) path(origin string) (string, bool) {
	name, ok := s.keys[origin]
	return filepath.Join(s.dir, name+".checkpoint"), ok
}

// trust gives the verifier every checkpoint seen before.
func (s *seenCheckpoints) trust(v *verify.Verifier) error {
	if s == nil {
		return nil
	}
	for origin := range s.keys {
		p, _ := s.path(origin)
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("seen checkpoints: %w", err)
		}
		c, err := v.Trust(string(b), p)
		if err != nil {
			return fmt.Errorf("seen checkpoints: %w (remove the file only if you know why it no longer verifies)", err)
		}
		s.size[origin] = c.Size
	}
	return nil
}

// keep records the largest verified checkpoint of each log.
func (s *seenCheckpoints) keep(rep *verify.Report) error {
	if s == nil {
		return nil
	}
	for _, l := range rep.Logs {
		if l.Checkpoint == "" {
			continue
		}
		origin := checkpoint.Origin(s.td, l.ID)
		p, ok := s.path(origin)
		if !ok || l.CheckpointSize < s.size[origin] {
			continue
		}
		if err := checkpoint.WriteFile(p, l.Checkpoint); err != nil {
			return err
		}
	}
	return nil
}
