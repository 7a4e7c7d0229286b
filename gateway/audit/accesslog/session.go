package accesslog

import (
	"context"
	"errors"
)

// Authenticator turns a citizen's credential into their citizen key: package
// citizen's Auth, whose sessions come from the national e-ID platform's
// OpenID Connect sign-in (or, in `jisr dev` only, a demo login). For HTTP it
// may also implement RequestAuthenticator (session cookie, cross-origin
// checks); gRPC callers send the session as "authorization: Bearer <id>".
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (ckey string, err error)
}

// ErrUnauthenticated: no credential, or one that does not hold.
var ErrUnauthenticated = errors.New("accesslog: not authenticated")
