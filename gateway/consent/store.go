package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/natsstate"
)

// Store keeps the consent service's shared state in JetStream key-value
// buckets: grants (by citizen), revocations (watched by every gateway
// replica), and use counters (compare-and-set, exact across replicas).
type Store struct {
	js                         jetstream.JetStream
	grants, revocations, usage jetstream.KeyValue
	requests                   jetstream.KeyValue // the consent service's only (OpenRequests)
	log                        *slog.Logger

	mu      sync.RWMutex
	revoked map[string]revocation
	paused  map[string]bool // pause state by jti (the revocation bucket's pause.<jti> keys)
	watch   watchState

	// OnRevocation, when set before WatchRevocations, is told how long each
	// revocation took from its write in the bucket to this replica applying
	// it (the revocation lag).
	OnRevocation func(lag time.Duration)
	// OnTampering, when set before WatchRevocations, is called for each
	// sign of tampering with the consent state: a revocation deleted or
	// purged, entries removed from the revocation stream, a bucket replaced.
	OnTampering func()
	// WatchEvery is how often the watch is checked against the buckets
	// (default 1s): how long a stopped watch may go unnoticed.
	WatchEvery time.Duration
}

// revocation is what a replica holds of one revoked token ID.
type revocation struct {
	at  time.Time // when it was written
	rev uint64    // its sequence in the bucket's stream
}

// Grant is what the consent service records of a token: never the token
// itself, never the eID.
type Grant struct {
	ID         string    `json:"jti"`
	CKey       string    `json:"ckey"`
	Consumer   string    `json:"consumer"` // SPIFFE ID
	Service    string    `json:"service"`
	Methods    []string  `json:"methods"`
	Fields     []string  `json:"fields,omitempty"`
	Purpose    string    `json:"purpose"`
	LegalBasis string    `json:"legal_basis"`
	IssuedAt   time.Time `json:"issued_at"`
	Expires    time.Time `json:"expires"`
	MaxUses    int       `json:"max_uses,omitempty"`
	Revoked    bool      `json:"revoked"`
	Paused     bool      `json:"paused,omitempty"`
	// UsedUp: its last permitted use was taken (the use counter reached
	// MaxUses): the citizen's page shows it used up.
	UsedUp bool `json:"used_up,omitempty"`
}

// GrantOf summarises claims.
func GrantOf(c *Claims) Grant {
	d := c.AuthorizationDetails[0]
	return Grant{
		ID: c.ID, CKey: c.Subject, Consumer: c.Audience, Service: d.Service, Methods: d.Methods, Fields: d.Fields,
		Purpose: c.Purpose, LegalBasis: c.LegalBasis, IssuedAt: time.Unix(c.IssuedAt, 0).UTC(),
		Expires: time.Unix(c.Expiry, 0).UTC(), MaxUses: c.MaxUses,
	}
}

type storeOptions struct {
	log *slog.Logger
}

// StoreOption configures OpenStore with an optional setting.
type StoreOption func(*storeOptions)

// WithStoreLogger sets the store's logger (default slog.Default()).
func WithStoreLogger(l *slog.Logger) StoreOption { return func(o *storeOptions) { o.log = l } }

// OpenStore binds the buckets. It never creates one: a missing bucket is
// natsstate.ErrMissing (the operator creates them with `jisr nats init`),
// because a bucket recreated empty would forget revocations and use counts.
// A bucket that could be purged or rolled up is refused (natsstate.ErrUnsafe).
func OpenStore(ctx context.Context, nc *nats.Conn, opts ...StoreOption) (*Store, error) {
	var o storeOptions
	for _, opt := range opts {
		opt(&o)
	}
	log := o.log
	if log == nil {
		log = slog.Default()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	s := &Store{js: js, log: log, revoked: map[string]revocation{}}
	if s.grants, err = natsstate.OpenBucket(ctx, js, subject.ConsentBucket); err != nil {
		return nil, fmt.Errorf("consent: %w", err)
	}
	if s.revocations, err = natsstate.OpenBucket(ctx, js, subject.RevocationBucket); err != nil {
		return nil, fmt.Errorf("consent: %w", err)
	}
	if s.usage, err = natsstate.OpenBucket(ctx, js, subject.UsageBucket); err != nil {
		return nil, fmt.Errorf("consent: %w", err)
	}
	return s, nil
}

// Record stores a new grant.
func (s *Store) Record(ctx context.Context, c *Claims) error {
	b, err := json.Marshal(GrantOf(c))
	if err != nil {
		return err
	}
	_, err = s.grants.Create(ctx, c.Subject+"."+c.ID, b)
	return err
}

// ErrUnknownToken is returned when a citizen revokes a token ID that is not
// one of their grants.
var ErrUnknownToken = errors.New("consent: no grant with this token ID")

// ErrBadID is returned for a token ID outside the grammar (CheckID): no
// token with such an ID can pass the verifier, so there is nothing to revoke.
var ErrBadID = errors.New("consent: not a token ID (16 to 64 characters of A-Z a-z 0-9 _ -)")

// Revoke marks a token ID revoked, whoever minted the token: the revocation
// is written whether or not a grant is recorded (tokens minted --offline or
// by another holder of the key have none). Every gateway watching the bucket
// refuses the ID from then on. The grant is returned when one is recorded,
// else nil.
func (s *Store) Revoke(ctx context.Context, jti string) (*Grant, error) {
	if !CheckID(jti) {
		return nil, ErrBadID
	}
	if _, err := s.revocations.Put(ctx, jti, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		return nil, err
	}
	g, err := s.GrantByID(ctx, jti)
	if g != nil {
		g.Revoked = true
	}
	return g, err
}

// GrantByID returns the grant recorded for the token ID jti, whoever's it
// is, or nil when none is recorded.
func (s *Store) GrantByID(ctx context.Context, jti string) (*Grant, error) {
	if !CheckID(jti) {
		return nil, ErrBadID
	}
	lister, err := s.grants.ListKeysFiltered(ctx, "*."+jti)
	if err != nil {
		return nil, err
	}
	var key string
	for k := range lister.Keys() {
		key = k
	}
	if key == "" {
		return nil, nil
	}
	e, err := s.grants.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	var g Grant
	if err := json.Unmarshal(e.Value(), &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// RevokedInBucket reads the revocations bucket (not the watch) for jti: a
// revocation deleted or purged (tampering) still counts as revoked: it
// never un-revokes.
func (s *Store) RevokedInBucket(ctx context.Context, jti string) (bool, error) {
	_, err := s.revocations.Get(ctx, jti)
	switch {
	case err == nil, errors.Is(err, jetstream.ErrKeyDeleted):
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, err
}

// List returns a citizen's grants, with their revocation state.
func (s *Store) List(ctx context.Context, ckey string) ([]Grant, error) {
	lister, err := s.grants.ListKeysFiltered(ctx, ckey+".*")
	if err != nil {
		return nil, err
	}
	var out []Grant
	for k := range lister.Keys() {
		e, err := s.grants.Get(ctx, k)
		if err != nil {
			continue
		}
		var g Grant
		if json.Unmarshal(e.Value(), &g) != nil {
			continue
		}
		if _, err := s.revocations.Get(ctx, g.ID); err == nil {
			g.Revoked = true
		}
		if e, err := s.revocations.Get(ctx, PauseKey(g.ID)); err == nil && string(e.Value()) == pausedValue {
			g.Paused = true
		}
		if used, err := s.usedUp(ctx, g.ID, g.MaxUses); err == nil {
			g.UsedUp = used
		}
		out = append(out, g)
	}
	return out, nil
}

// Use counts one use of jti, refusing past max; compare-and-set makes the
// count exact however many gateway replicas race.
func (s *Store) Use(ctx context.Context, jti string, max int) error {
	lostCreate := false
	for attempt := 0; attempt < 64; attempt++ {
		e, err := s.usage.Get(ctx, jti)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound) && lostCreate:
			// The first use may be written only where the key never held
			// anything. Still "not found" after that write was refused: the
			// key holds a delete marker — a counter someone erased, never
			// a gateway. Fail closed.
			return ErrUsedUp
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Revision 0: only if no value and no delete marker was ever
			// stored (nats.go's Create would write over a delete marker).
			if _, err := s.usage.Update(ctx, jti, []byte("1"), 0); err == nil {
				return nil
			} else if !isConflict(err) {
				return err
			}
			lostCreate = true
			continue
		case err != nil:
			return err
		}
		// A value that is not a count (empty, garbage) was not written by a
		// gateway: fail closed, the token is used up.
		n, err := strconv.Atoi(string(e.Value()))
		if err != nil || n < 0 || n >= max {
			return ErrUsedUp
		}
		lostCreate = false
		if _, err := s.usage.Update(ctx, jti, []byte(strconv.Itoa(n+1)), e.Revision()); err == nil {
			return nil
		} else if !isConflict(err) {
			return err
		}
	}
	return errors.New("consent: use counter contended")
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
