package natsserver

import (
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// svidAuth maps a client to its user as verify_and_map does — the SPIFFE
// URI SAN of the verified client certificate is the user name, and the
// user's permissions are those natsconf rendered — and in addition sets the
// user's ConnectionDeadline to the certificate chain's expiry: the server
// closes the connection when the SVID expires ("Authentication Expired"),
// and the reconnect with the expired certificate fails the TLS handshake.
//
// The certificate chain was verified at the handshake against the trust
// bundle the svid.Source holds at that moment, so a rotated bundle applies to
// every new connection without a restart.
type svidAuth struct {
	mu    sync.RWMutex
	users map[string]*server.User // SPIFFE ID → the rendered user
	now   func() time.Time
}

func newSVIDAuth(users []*server.User) *svidAuth {
	a := &svidAuth{users: make(map[string]*server.User, len(users)), now: time.Now}
	for _, u := range users {
		a.users[u.Username] = u
	}
	return a
}

// bind prepares the users as the server prepares its own configured users
// (which it skips when authentication is custom): each in the account the
// server registered under that name, or the global account, and a response
// permission with its defaults and no blanket publish allow. Call it after
// server.NewServer and before Start.
func (a *svidAuth) bind(ns *server.Server) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	bound, err := bindUsers(ns, a.users)
	if err != nil {
		return err
	}
	a.users = bound
	return nil
}

// replace puts new users in force for every later connection (a new
// federation version): connections already open keep the permissions they
// were given when they authenticated.
func (a *svidAuth) replace(ns *server.Server, users []*server.User) error {
	byName := make(map[string]*server.User, len(users))
	for _, u := range users {
		byName[u.Username] = u
	}
	bound, err := bindUsers(ns, byName)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.users = bound
	a.mu.Unlock()
	return nil
}

// snapshot returns the users in force, by SPIFFE ID.
func (a *svidAuth) snapshot() map[string]*server.User {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.users
}

func bindUsers(ns *server.Server, users map[string]*server.User) (map[string]*server.User, error) {
	out := make(map[string]*server.User, len(users))
	for name, u := range users {
		c := *u
		c.Account = ns.GlobalAccount()
		if u.Account != nil {
			acc, err := ns.LookupAccount(u.Account.Name)
			if err != nil {
				return nil, fmt.Errorf("natsserver: user %s: account %s: %w", name, u.Account.Name, err)
			}
			c.Account = acc
		}
		if p := u.Permissions; p != nil && p.Response != nil {
			cp, rp := *p, *p.Response
			if cp.Publish == nil {
				cp.Publish = &server.SubjectPermission{}
			}
			if cp.Publish.Allow == nil {
				pub := *cp.Publish
				pub.Allow = []string{}
				cp.Publish = &pub
			}
			if rp.MaxMsgs == 0 {
				rp.MaxMsgs = server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS
			}
			if rp.Expires == 0 {
				rp.Expires = server.DEFAULT_ALLOW_RESPONSE_EXPIRATION
			}
			cp.Response = &rp
			c.Permissions = &cp
		}
		out[name] = &c
	}
	return out, nil
}

// Check implements server.Authentication.
func (a *svidAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	st := c.GetTLSConnectionState()
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return false
	}
	chain := st.VerifiedChains[0]
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return false
	}
	a.mu.RLock()
	u, ok := a.users[id.String()]
	a.mu.RUnlock()
	if !ok {
		return false
	}
	deadline := expiry(chain)
	if !a.now().Before(deadline) {
		return false
	}
	mapped := *u
	mapped.ConnectionDeadline = deadline
	c.RegisterUser(&mapped)
	return true
}

// expiry is when the first certificate of a verified chain expires.
func expiry(chain []*x509.Certificate) time.Time {
	t := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}
