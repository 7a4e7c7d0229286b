package consent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/status"

	"github.com/jisr-bus/jisr/gateway/consent"
	"github.com/jisr-bus/jisr/gateway/decision"
)

// state is revocations, pauses and use counters held in memory for the
// cache test (the JetStream-backed ones have their own tests).
type state struct {
	mu      sync.Mutex
	revoked map[string]bool
	paused  map[string]bool
	uses    map[string]int
}

func (s *state) Revoked(jti string) bool { s.mu.Lock(); defer s.mu.Unlock(); return s.revoked[jti] }
func (s *state) Paused(jti string) bool  { s.mu.Lock(); defer s.mu.Unlock(); return s.paused[jti] }
func (s *state) Use(_ context.Context, jti string, max int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uses[jti] >= max {
		return consent.ErrUsedUp
	}
	s.uses[jti]++
	return nil
}

func reasonOf(err error) string { return decision.ReasonOf(status.Convert(err)) }

// TestCachedTokenIsStillCheckedEveryQuery: the verified-token cache saves
// the parse and the signature only. A cached token that is revoked, paused,
// used up or expired is refused on the next query, and a token that differs
// from a cached one in one byte is verified afresh.
func TestCachedTokenIsStillCheckedEveryQuery(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := consent.InitKeys(dir); err != nil {
		t.Fatal(err)
	}
	ks, err := consent.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	iss := spiffeid.RequireFromString("spiffe://jisr.internal/consent")
	aud := spiffeid.RequireFromString("spiffe://jisr.internal/member/cnss")
	issue := func(maxUses int) (string, string) {
		tok, c, err := consent.NewIssuer(ks, iss).Issue(&consent.Request{CKey: "CK", Audience: aud, Service: svc,
			Methods: []string{"GetPerson"}, Purpose: purpose, LegalBasis: "consent", TTL: time.Hour, MaxUses: maxUses})
		if err != nil {
			t.Fatal(err)
		}
		return tok, c.ID
	}
	st := &state{revoked: map[string]bool{}, paused: map[string]bool{}, uses: map[string]int{}}
	now := time.Now()
	clock := func() time.Time { return now }
	v, err := consent.NewVerifier(consent.VerifierConfig{Keys: ks.PublicOnly(), Issuer: iss},
		consent.WithRevocations(st), consent.WithUsage(st), consent.WithCacheSize(2), consent.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	verify := func(tok string) error {
		_, err := v.Verify(context.Background(), &decision.Request{ConsumerID: aud, CKey: "CK", Service: svc,
			Method: "GetPerson", Purpose: purpose, Token: tok})
		return err
	}
	tok, jti := issue(0)
	for range 3 {
		if err := verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	if calls, hits := v.CacheStats(); calls != 3 || hits != 2 {
		t.Fatalf("cache: %d look-ups, %d hits; want 3 and 2", calls, hits)
	}

	// One byte of the signature changed: not the cached token.
	bad := []byte(tok)
	bad[len(bad)-2] ^= 1
	if err := verify(string(bad)); err == nil {
		t.Fatal("a tampered copy of a cached token was accepted")
	}

	st.mu.Lock()
	st.paused[jti] = true
	st.mu.Unlock()
	if r := reasonOf(verify(tok)); r != consent.ReasonPaused {
		t.Fatalf("paused cached token: %q", r)
	}
	st.mu.Lock()
	st.paused[jti], st.revoked[jti] = false, true
	st.mu.Unlock()
	if r := reasonOf(verify(tok)); r != consent.ReasonRevoked {
		t.Fatalf("revoked cached token: %q", r)
	}

	// Uses are counted on every hit.
	limited, _ := issue(2)
	for i := range 2 {
		if err := verify(limited); err != nil {
			t.Fatalf("use %d: %v", i+1, err)
		}
	}
	if r := reasonOf(verify(limited)); r != consent.ReasonUsedUp {
		t.Fatalf("third use of a two-use cached token: %q", r)
	}

	// Expiry holds for a cached token, and more tokens than the cache
	// holds are all still verified.
	fresh, _ := issue(0)
	other, _ := issue(0)
	for _, tk := range []string{fresh, other, fresh, other} {
		if err := verify(tk); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Hour)
	if r := reasonOf(verify(fresh)); r != consent.ReasonExpired {
		t.Fatalf("expired cached token: %q", r)
	}
}
