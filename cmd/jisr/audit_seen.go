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

// seenDirDefault is $JISR_AUDIT_SEEN_DIR, else <user config dir>/jisr/audit-seen.
func seenDirDefault() (string, error) {
	if d := os.Getenv("JISR_AUDIT_SEEN_DIR"); d != "" {
		return d, nil
	}
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

// trust gives the verifier every checkpoint seen before. A checkpoint seen
// of a log that has no trusted key now, or another key than the one trusted
// now, fails: a log erased together with its key, begun again under a new
// key or a new name, must not pass because the old key is gone (a
// legitimate key change or a retired log is for the auditor to
// acknowledge, by removing the old file).
func (s *seenCheckpoints) trust(v *verify.Verifier) error {
	if s == nil {
		return nil
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("seen checkpoints: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".checkpoint")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		log, hash, _ := strings.Cut(name, "+")
		known := false
		for origin := range s.keys {
			known = known || strings.ReplaceAll(origin, "/", "_") == log
		}
		if !known {
			return fmt.Errorf("seen checkpoints: %s: the log %s was seen before, and no key of it is trusted now: "+
				"the log may have been erased together with its key; remove the file only if you know why the log is gone",
				filepath.Join(s.dir, e.Name()), log)
		}
		for origin, now := range s.keys {
			if strings.ReplaceAll(origin, "/", "_") == log && now != name {
				_, nowHash, _ := strings.Cut(now, "+")
				return fmt.Errorf("seen checkpoints: %s: the log %s was seen under the key %s, and the key trusted now is %s: "+
					"the log may have been erased and begun again under a new key; remove the file only if you know why its key changed",
					filepath.Join(s.dir, e.Name()), origin, hash, nowHash)
			}
		}
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
