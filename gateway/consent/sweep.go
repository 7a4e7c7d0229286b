package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"

	"github.com/jisr-bus/jisr/bus/subject"
	"github.com/jisr-bus/jisr/gateway/decision"
	consentv1 "github.com/jisr-bus/jisr/proto/gen/jisr/consent/v1"
)

// The transitions nobody asks for: a consent's time passes (EXPIRED), its
// last permitted use is consumed (USED_UP). The consent service's sweeper
// stores each one in the request bucket and writes it to the consent
// service's own audit log. Their records name the consent service as
// provider, the ConsentRequests service, and one of these methods.
const (
	TransitionExpired = "ConsentExpired"
	TransitionUsedUp  = "ConsentUsedUp"
)

// ReasonConsentTransition is the reason of the audit record of a transition
// the consent service recorded by itself (expired, used up).
const ReasonConsentTransition = "CONSENT_TRANSITION"

// Sweeper stores the EXPIRED and USED_UP transitions of the ACTIVE (or
// PAUSED) consent requests, and audits each one.
//
// It follows the request bucket and the use counters (key-value watches:
// on start they replay everything, so a sweeper started after a stop
// catches up on every consent that expired or was used up meanwhile), and
// wakes at the earliest expiry. A transition is a compare-and-set of the
// request's revision from ACTIVE to the new state: however many sweepers
// race, one stores it. The counter itself is exact (Store.Use: the gateway
// replica whose compare-and-set takes the last use is the only one that
// does; no replica can take one more).
//
// Audit: the fact comes first and cannot be refused — the token's expiry
// and the counter already stop every gateway from accepting it — so the
// transition is stored with Unaudited set, then appended to the audit log,
// then Unaudited is cleared. An append that fails is retried (every
// second) until it is durable; a sweeper that stopped between the two
// leaves Unaudited set, and the next one audits it on its catch-up. A
// record may therefore be written twice (a crash after the append, before
// the clear), never lost.
type Sweeper struct {
	Store *Store
	// Audit makes the transition's record durable (the consent service's
	// audit log). Required.
	Audit AuditFunc
	Log   *slog.Logger
	// Retry is how long a failed append or store waits (default 1s); Every
	// bounds the wait between two full passes (default 30s).
	Retry, Every time.Duration
	// OnTransition, when set, is told of each transition audited.
	OnTransition func(r ConsentRequest)
}

// tracked is what the sweeper holds of one request it may have to move.
type tracked struct {
	jti       string
	expires   time.Time
	maxUses   int
	unaudited bool
}

// Run sweeps until ctx ends. It fails when the buckets cannot be watched.
func (sw *Sweeper) Run(ctx context.Context) error {
	st := sw.Store
	if st == nil || st.requests == nil || sw.Audit == nil {
		return errors.New("consent sweeper: a store with the request bucket and an audit function are required")
	}
	log := sw.Log
	if log == nil {
		log = slog.Default()
	}
	retry, every := sw.Retry, sw.Every
	if retry <= 0 {
		retry = time.Second
	}
	if every <= 0 {
		every = 30 * time.Second
	}
	reqW, err := st.requests.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("consent sweeper: watch the requests: %w", err)
	}
	defer func() { _ = reqW.Stop() }()
	useW, err := st.usage.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("consent sweeper: watch the use counters: %w", err)
	}
	defer func() { _ = useW.Stop() }()

	live := map[string]*tracked{} // request key → what may move
	byJTI := map[string]string{}  // jti → request key
	reqReady, useReady := false, false
	dirty := map[string]bool{} // keys to look at on the next pass
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		full := false
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-reqW.Updates():
			if !ok {
				return errors.New("consent sweeper: the request watch stopped")
			}
			if e == nil {
				reqReady = true
				full = true
				break
			}
			key := e.Key()
			if !strings.Contains(key, ".") {
				continue // not a request (the sweeper's lease)
			}
			var r ConsentRequest
			if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &r) != nil ||
				(!r.Unaudited && (r.State != StateActive || r.JTI == "")) {
				if t := live[key]; t != nil {
					delete(byJTI, t.jti)
				}
				delete(live, key)
				continue
			}
			live[key] = &tracked{jti: r.JTI, expires: r.Expires, maxUses: r.MaxUses, unaudited: r.Unaudited}
			if r.JTI != "" {
				byJTI[r.JTI] = key
			}
			dirty[key] = true
		case e, ok := <-useW.Updates():
			if !ok {
				return errors.New("consent sweeper: the use counter watch stopped")
			}
			if e == nil {
				useReady = true
				full = true
				break
			}
			if key, ok := byJTI[e.Key()]; ok {
				dirty[key] = true
			}
		case <-timer.C:
			full = true
		}
		if !reqReady || !useReady {
			continue
		}
		now := time.Now()
		if full {
			for key, t := range live {
				if t.unaudited || !now.Before(t.expires) || t.maxUses > 0 {
					dirty[key] = true
				}
			}
		} else if len(dirty) == 0 {
			continue
		}
		failed := false
		for key := range dirty {
			switch sw.step(ctx, log, key, live[key]) {
			case stepRetry:
				failed = true
				continue
			case stepDrop:
				if t := live[key]; t != nil {
					delete(byJTI, t.jti)
				}
				delete(live, key)
			}
			delete(dirty, key)
		}
		// Wake at the earliest expiry to come, or to retry, or for a full
		// pass. (One already due was just looked at: it moved, waits for
		// its own update by the watch, or failed and is retried.)
		next := every
		if failed {
			next = retry
		}
		for _, t := range live {
			if d := time.Until(t.expires); !t.unaudited && d > 0 && d < next {
				next = d
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// What step says of a request: look again later (it may still move), retry
// soon (something failed), or forget it (it will not move again).
const (
	stepKeep = iota
	stepRetry
	stepDrop
)

// step looks at one request and moves it if its time has passed or its uses
// are spent.
func (sw *Sweeper) step(ctx context.Context, log *slog.Logger, key string, t *tracked) int {
	if t == nil {
		return stepDrop
	}
	ckey, id, _ := strings.Cut(key, ".")
	st := sw.Store
	r, rev, err := st.getRequest(ctx, ckey, id)
	if errors.Is(err, ErrUnknownRequest) {
		return stepDrop
	}
	if err != nil {
		log.Warn("consent sweeper: request unreadable; will retry", "err", err)
		return stepRetry
	}
	if !r.Unaudited {
		if r.State != StateActive {
			return stepDrop
		}
		if revoked, err := st.RevokedInBucket(ctx, r.JTI); err != nil {
			return stepRetry
		} else if revoked {
			return stepDrop // REVOKED is final; the citizen's revocation was audited before it was made
		}
		next := ""
		if used, err := st.usedUp(ctx, r.JTI, r.MaxUses); err != nil {
			return stepRetry
		} else if used {
			// The last use came before the expiry (an expired token is
			// never used): used up first.
			next = StateUsedUp
		} else if !time.Now().Before(r.Expires) {
			next = StateExpired
		}
		if next == "" {
			return stepKeep
		}
		r.State, r.Updated, r.Unaudited = next, time.Now().UTC(), true
		b, err := json.Marshal(r)
		if err != nil {
			return stepDrop
		}
		if rev, err = st.requests.Update(ctx, key, b, rev); isConflict(err) {
			return stepKeep // another sweeper moved it, or the request changed: its update comes by the watch
		} else if err != nil {
			log.Warn("consent sweeper: transition not stored; will retry", "state", next, "err", err)
			return stepRetry
		}
		log.Info("consent transition stored", "state", next, "jti", r.JTI)
	}
	if err := sw.Audit(ctx, transitionRecord(r)); err != nil {
		log.Error("consent sweeper: the transition's audit record is not durable; will retry", "state", r.State, "jti", r.JTI, "err", err)
		return stepRetry
	}
	r.Unaudited = false
	b, err := json.Marshal(r)
	if err != nil {
		return stepDrop
	}
	if _, err := st.requests.Update(ctx, key, b, rev); err != nil && !isConflict(err) {
		// Audited but still marked: the next pass audits it again (a
		// duplicate record, never a missing one).
		log.Warn("consent sweeper: audited transition not marked; will retry", "err", err)
		return stepRetry
	}
	if sw.OnTransition != nil {
		sw.OnTransition(*r)
	}
	return stepDrop
}

// usedUp reports whether jti's uses are spent: its counter reached max (or
// does not parse: Use counts such a counter as used up too).
func (st *Store) usedUp(ctx context.Context, jti string, max int) (bool, error) {
	if max <= 0 {
		return false, nil
	}
	e, err := st.usage.Get(ctx, jti)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case errors.Is(err, jetstream.ErrKeyDeleted):
		return true, nil
	case err != nil:
		return false, err
	}
	n, err := strconv.Atoi(string(e.Value()))
	return err != nil || n < 0 || n >= max, nil
}

// transitionRecord is the audit record of r's stored transition.
func transitionRecord(r *ConsentRequest) *decision.Decision {
	method := TransitionExpired
	if r.State == StateUsedUp {
		method = TransitionUsedUp
	}
	at := r.Updated
	return &decision.Decision{
		Time: at, VisibleAt: at, Consumer: r.Consumer, Provider: subject.ConsentProvider,
		Service: consentv1.ConsentRequests_ServiceDesc.ServiceName, Method: method, CKey: r.CKey,
		Purpose: r.Purpose, LegalBasis: r.LegalBasis, TokenID: r.JTI, Fields: r.Fields,
		Allowed: true, Reason: ReasonConsentTransition, Code: codes.OK,
	}
}

// AuditLogID names the consent service's own audit log (jisr.audit.consent.…,
// checkpoint key <certs>/audit/consent.{key,pub}): the records of the
// transitions it stores by itself. One writer at a time: the holder of the
// sweeper's lease.
const AuditLogID = subject.ConsentAuditLog

// leaseKey is the request bucket's key of the sweeper's lease (no dot: it
// names no request).
const leaseKey = "sweeper"

type lease struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// TakeLease takes, or renews, the sweeper's lease for holder until ttl from
// now. It reports false while another holder's lease runs. Two consent
// service replicas racing: compare-and-set, one takes it.
func (st *Store) TakeLease(ctx context.Context, holder string, ttl time.Duration) (bool, error) {
	if st.requests == nil {
		return false, ErrUnavailable
	}
	var rev uint64
	e, err := st.requests.Get(ctx, leaseKey)
	switch {
	case err == nil:
		var l lease
		if json.Unmarshal(e.Value(), &l) == nil && l.Holder != holder && time.Now().Before(l.Until) {
			return false, nil
		}
		rev = e.Revision()
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return false, err
	}
	b, err := json.Marshal(lease{Holder: holder, Until: time.Now().Add(ttl).UTC()})
	if err != nil {
		return false, err
	}
	if _, err := st.requests.Update(ctx, leaseKey, b, rev); isConflict(err) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return true, nil
}

// DropLease ends holder's lease at once (a clean stop), so that another
// replica takes over without waiting for it to run out.
func (st *Store) DropLease(ctx context.Context, holder string) error {
	e, err := st.requests.Get(ctx, leaseKey)
	if err != nil {
		return err
	}
	var l lease
	if json.Unmarshal(e.Value(), &l) != nil || l.Holder != holder {
		return nil
	}
	b, _ := json.Marshal(lease{Holder: holder})
	_, err = st.requests.Update(ctx, leaseKey, b, e.Revision())
	return err
}
