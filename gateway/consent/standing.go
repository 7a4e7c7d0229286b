package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jisr-bus/jisr/bus/federation"
	"github.com/jisr-bus/jisr/gateway/events"
)

// Standing grants as the legal basis of event deliveries (docs/events.md,
// "Consent as the legal basis"). A published event carries no token of the
// receiver's, so the gateway reads the citizen's recorded grants instead: a
// grant covers a delivery when it was made to the consumer, for the
// service jisr.events.v1.EventSink with the event type among its methods,
// for the rule's purpose and every field the rule releases, and it is
// neither revoked, paused, expired nor used up.

// ErrNoStandingGrant: the citizen holds no grant that covers the delivery.
var ErrNoStandingGrant = errors.New("consent: no active grant covers this delivery")

// StandingRequest is one delivery that needs the citizen's consent.
type StandingRequest struct {
	CKey     string
	Consumer string // the consumer's SPIFFE ID (the grant's audience)
	Service  string
	Method   string
	Purpose  string
	Fields   []string // what the delivery releases beyond id, time and eid
	Now      time.Time
}

// StandingGrant returns the grant that covers r, ErrNoStandingGrant when
// none does, or an error wrapping ErrStateUnavailable when the consent
// state cannot be read or is not known to be in step (the revocation and
// pause watch): never a silent "no consent needed". A grant with max_uses
// is counted once per call.
func (s *Store) StandingGrant(ctx context.Context, r StandingRequest) (*Grant, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	lister, err := s.grants.ListKeysFiltered(ctx, r.CKey+".*")
	if err != nil {
		return nil, fmt.Errorf("%w: grants: %v", ErrStateUnavailable, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e, err := s.grants.Get(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("%w: grant %s: %v", ErrStateUnavailable, k, err)
		}
		var g Grant
		if json.Unmarshal(e.Value(), &g) != nil || !g.covers(r) {
			continue
		}
		if s.Revoked(g.ID) || s.Paused(g.ID) {
			continue
		}
		// The watch may lag a revocation written an instant ago: read the
		// bucket too, as the grant is about to be relied on.
		if revoked, err := s.RevokedInBucket(ctx, g.ID); err != nil {
			return nil, fmt.Errorf("%w: revocation of %s: %v", ErrStateUnavailable, g.ID, err)
		} else if revoked {
			continue
		}
		if e, err := s.revocations.Get(ctx, PauseKey(g.ID)); err == nil && string(e.Value()) != activeValue || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // paused an instant ago (the watch may not have it yet), or its pause tampered with
		} else if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: pause of %s: %v", ErrStateUnavailable, g.ID, err)
		}
		if g.MaxUses > 0 {
			if err := s.Use(ctx, g.ID, g.MaxUses); errors.Is(err, ErrUsedUp) {
				continue
			} else if err != nil {
				return nil, fmt.Errorf("%w: use counter of %s: %v", ErrStateUnavailable, g.ID, err)
			}
		}
		return &g, nil
	}
	return nil, ErrNoStandingGrant
}

// covers reports whether g, as recorded, is for r (revocation and pauses
// apart).
func (g *Grant) covers(r StandingRequest) bool {
	if g.CKey != r.CKey || g.Consumer != r.Consumer || g.Service != r.Service || g.Purpose != r.Purpose ||
		g.LegalBasis != federation.BasisConsent || g.Revoked || g.Paused || !slices.Contains(g.Methods, r.Method) {
		return false
	}
	if !r.Now.Before(g.Expires) || r.Now.Before(g.IssuedAt.Add(-MaxClockSkew)) {
		return false
	}
	// A grant names the fields the citizen agreed to release; one that
	// names none was made for the whole of what its rule releases.
	if len(g.Fields) > 0 {
		for _, f := range r.Fields {
			if !slices.Contains(g.Fields, f) {
				return false
			}
		}
	}
	return true
}

// EventConsents answers the gateway's events service (events.Consents)
// from the store: a delivery under an event rule on consent needs an active
// grant of the citizen to the consumer for the service
// jisr.events.v1.EventSink with the event type among its methods
// (docs/events.md).
//
// The consumer's SPIFFE ID is read from the federation version that
// decides the event (q.Federation), not from one captured at start: a
// member a later version added gets its consented deliveries.
type EventConsents struct {
	Store *Store
}

// Covering implements events.Consents.
func (c EventConsents) Covering(ctx context.Context, q events.ConsentQuery) (string, error) {
	if q.Federation == nil {
		return "", errors.New("consent: an event's consent query names no federation version")
	}
	m, err := q.Federation.Member(q.Consumer)
	if err != nil {
		return "", events.ErrNoConsent
	}
	g, err := c.Store.StandingGrant(ctx, StandingRequest{
		CKey: q.CKey, Consumer: m.ID.String(), Service: events.Service, Method: q.EventType,
		Purpose: q.Purpose, Fields: q.Fields, Now: q.Now,
	})
	if errors.Is(err, ErrNoStandingGrant) {
		return "", events.ErrNoConsent
	}
	if err != nil {
		return "", err
	}
	return g.ID, nil
}
