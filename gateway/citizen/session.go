package citizen

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"slices"
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
	// agent: a counter agent's session (only the agent signed in: it
	// serves nothing), or, on a citizen's session, the ckey of the agent
	// whose session the citizen signed in on (every action names them).
	agent     string
	agentOnly bool
}

// SessionsPerCitizen is how many live sessions one citizen may hold (a phone, a
// laptop, a few tabs signed in apart). Signing in once more ends the oldest,
// so one real account cannot fill the store and lock every other citizen out.
const SessionsPerCitizen = 8

// store holds sessions server-side with idle and absolute expiry.
type store struct {
	idle, max time.Duration
	limit     int
	now       func() time.Time

	mu        sync.Mutex
	sessions  map[[32]byte]*session
	byCitizen map[string][][32]byte // ckey → its sessions, oldest first
}

func newStore(idle, max time.Duration, limit int, now func() time.Time) *store {
	return &store{
		idle: idle, max: max, limit: limit, now: now,
		sessions: map[[32]byte]*session{}, byCitizen: map[string][][32]byte{},
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
func (s *store) create(ckey string) (string, error) { return s.createWith(ckey, "", false) }

// createWith starts a session for ckey, assisted by agent ("" for none), or
// an agent's own session (agentOnly).
func (s *store) createWith(ckey, agent string, agentOnly bool) (string, error) {
	id, err := randomID()
	if err != nil {
		return "", err
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if mine := s.byCitizen[ckey]; len(mine) >= SessionsPerCitizen {
		s.removeLocked(mine[0])
	}
	if len(s.sessions) >= s.limit {
		s.pruneLocked(now)
		if len(s.sessions) >= s.limit {
			return "", ErrBusy
		}
	}
	h := hashID(id)
	s.sessions[h] = &session{ckey: ckey, created: now, last: now, agent: agent, agentOnly: agentOnly}
	s.byCitizen[ckey] = append(s.byCitizen[ckey], h)
	return id, nil
}

// lookup returns the citizen key of a live session and refreshes its idle
// time; an expired session is destroyed. A counter agent's own session
// serves nothing (ErrAgentAlone).
func (s *store) lookup(id string) (string, error) {
	ck, _, err := s.lookupAgent(id)
	return ck, err
}

// lookupAgent is lookup, with the agent who assists the citizen ("" if none).
func (s *store) lookupAgent(id string) (string, string, error) {
	ss, err := s.get(id)
	if err != nil {
		return "", "", err
	}
	if ss.agentOnly {
		return "", "", ErrAgentAlone
	}
	return ss.ckey, ss.agent, nil
}

// get returns a live session (a copy).
func (s *store) get(id string) (session, error) {
	if len(id) != sessionIDLen {
		return session{}, ErrUnauthenticated
	}
	h := hashID(id)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[h]
	if !ok {
		return session{}, ErrUnauthenticated
	}
	if s.expired(ss, now) {
		s.removeLocked(h)
		return session{}, ErrExpired
	}
	ss.last = now
	return *ss, nil
}

// destroy ends a session (logout, or rotation at login).
func (s *store) destroy(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(hashID(id))
}

// removeLocked ends the session h.
func (s *store) removeLocked(h [32]byte) {
	ss, ok := s.sessions[h]
	if !ok {
		return
	}
	delete(s.sessions, h)
	mine := slices.DeleteFunc(s.byCitizen[ss.ckey], func(x [32]byte) bool { return x == h })
	if len(mine) == 0 {
		delete(s.byCitizen, ss.ckey)
	} else {
		s.byCitizen[ss.ckey] = mine
	}
}

func (s *store) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.last) >= s.idle || now.Sub(ss.created) >= s.max
}

func (s *store) pruneLocked(now time.Time) {
	for k, ss := range s.sessions {
		if s.expired(ss, now) {
			s.removeLocked(k)
		}
	}
}
