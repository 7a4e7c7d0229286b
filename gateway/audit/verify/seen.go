package verify

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jisr-bus/jisr/gateway/audit/checkpoint"
)

// Seen is the auditor's memory: for each log (and key), the largest
// checkpoint a verification of the live streams verified, kept on the
// auditor's own disk. The next verification fails when a log no
// longer extends it, so a log erased or cut short together with its
// checkpoints cannot pass unseen. One file per log key:
// <dir>/<origin with / as _>+<key hash>.checkpoint, the signed note.
type Seen struct {
	dir  string
	td   string
	keys map[string]string // origin → file name prefix (name+hash)
	size map[string]uint64 // origin → size of the checkpoint seen
}

// OpenSeen returns the seen checkpoints kept in dir, for the logs whose
// keys are trusted. A nil *Seen keeps none.
func OpenSeen(dir, trustDomain string, keys *checkpoint.Keys) *Seen {
	s := &Seen{dir: dir, td: trustDomain, keys: map[string]string{}, size: map[string]uint64{}}
	for _, vk := range keys.VerifierKeys() {
		parts := strings.SplitN(vk, "+", 3)
		if len(parts) != 3 {
			continue
		}
		s.keys[parts[0]] = strings.ReplaceAll(parts[0], "/", "_") + "+" + parts[1]
	}
	return s
}

func (s *Seen) path(origin string) (string, bool) {
	name, ok := s.keys[origin]
	return filepath.Join(s.dir, name+".checkpoint"), ok
}

// Trust gives the verifier every checkpoint seen before. A checkpoint seen
// of a log that has no trusted key now, or another key than the one trusted
// now, fails: a log erased together with its key, begun again under a new
// key or a new name, must not pass because the old key is gone (a
// legitimate key change or a retired log is for the auditor to
// acknowledge, by removing the old file).
func (s *Seen) Trust(v *Verifier) error {
	if s == nil {
		return nil
	}
	if err := s.checkKeys(); err != nil {
		return err
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

// checkKeys fails when a checkpoint was seen of a log whose key is not the
// one trusted now, or of a log no trusted key names.
func (s *Seen) checkKeys() error {
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
		for origin, now := range s.keys {
			if strings.ReplaceAll(origin, "/", "_") != log {
				continue
			}
			known = true
			if now != name {
				_, nowHash, _ := strings.Cut(now, "+")
				return fmt.Errorf("seen checkpoints: %s: the log %s was seen under the key %s, and the key trusted now is %s: "+
					"the log may have been erased and begun again under a new key; remove the file only if you know why its key changed",
					filepath.Join(s.dir, e.Name()), origin, hash, nowHash)
			}
		}
		if !known {
			return fmt.Errorf("seen checkpoints: %s: the log %s was seen before, and no key of it is trusted now: "+
				"the log may have been erased together with its key; remove the file only if you know why the log is gone",
				filepath.Join(s.dir, e.Name()), log)
		}
	}
	return nil
}

// Keep records the largest verified checkpoint of each log, after a
// successful verification.
func (s *Seen) Keep(rep *Report) error {
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
