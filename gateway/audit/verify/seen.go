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

// Trust gives the verifier every checkpoint seen before.
func (s *Seen) Trust(v *Verifier) error {
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
