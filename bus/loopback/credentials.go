package loopback

import (
	"crypto/tls"
	"errors"
	"net/url"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ErrPlaintext: plaintext was asked for off loopback. Callers wrap it with
// what to do instead (adapter.ErrPlaintextNotLocal, backend's).
var ErrPlaintext = errors.New("plaintext is allowed only on a loopback address")

// ServerCredentials returns a gRPC server's transport for a listen address:
// plaintext on loopback (the sidecar case: the client shares the host),
// otherwise TLS with tlsConf (mTLS with an SVID); ErrPlaintext when there is
// no tlsConf off loopback.
func ServerCredentials(addr string, tlsConf *tls.Config) ([]grpc.ServerOption, error) {
	if Is(addr) {
		return nil, nil
	}
	if tlsConf == nil {
		return nil, ErrPlaintext
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tlsConf))}, nil
}

// ClientCredentials returns a gRPC client's transport to a dial address:
// TLS with tlsConf when there is one, else plaintext to a loopback address;
// ErrPlaintext for plaintext anywhere else.
func ClientCredentials(addr string, tlsConf *tls.Config) (credentials.TransportCredentials, error) {
	switch {
	case tlsConf != nil:
		return credentials.NewTLS(tlsConf), nil
	case Is(addr):
		return insecure.NewCredentials(), nil
	default:
		return nil, ErrPlaintext
	}
}

// SecureURL reports whether u is https, or http to a loopback host: the URLs
// a secret or a citizen's sign-in may travel to.
func SecureURL(u *url.URL) bool {
	return u.Scheme == "https" || u.Scheme == "http" && Is(u.Hostname())
}
