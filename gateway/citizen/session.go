package citizen

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"
)

// sessionIDLen is the length of a session ID as the citizen holds it: 256
// random bits, base64url without padding.
const sessionIDLen = 43

// session is what the server keeps of a signed-in citizen: never the ID
// itself (only its SHA-256 is the map's key), never the eID.
type session struct {
	ckey    string
	created time.Time
	last    time.Time
}

// store holds sessions server-side with idle and absolute expiry.
type store struct {
	idle, max time.Duration
	limit     int
	now       func() time.Time

	mu       sync.Mutex
	sessions map[[32]byte]*session
}

func newStore(idle, max time.Duration, limit int, now func() time.Time) *store {
	return &store{
		idle: idle, max: max, limit: limit, now: now,
		sessions: map[[32]byte]*session{},
	}
}

func randomID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hashID(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// create starts a session for ckey and returns its ID.
func (s *store) create(ckey string) (string, error) {
	id, err := randomID()
	if err != nil {
		return "", err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= s.limit {
		s.pruneLocked(now)
		if len(s.sessions) >= s.limit {
			return "", ErrBusy
		}
	}
	s.sessions[hashID(id)] = &session{ckey: ckey, created: now, last: now}
	return id, nil
}

// lookup returns the citizen key of a live session and refreshes its idle
// time; an expired session is destroyed.
func (s *store) lookup(id string) (string, error) {
	if len(id) != sessionIDLen {
		return "", ErrUnauthenticated
	}
	h := hashID(id)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[h]
	if !ok {
		return "", ErrUnauthenticated
	}
	if s.expired(ss, now) {
		delete(s.sessions, h)
		return "", ErrExpired
	}
	ss.last = now
	return ss.ckey, nil
}

// destroy ends a session (logout, or rotation at login).
func (s *store) destroy(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, hashID(id))
}

func (s *store) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.last) >= s.idle || now.Sub(ss.created) >= s.max
}

func (s *store) pruneLocked(now time.Time) {
	for k, ss := range s.sessions {
		if s.expired(ss, now) {
			delete(s.sessions, k)
		}
	}
}
