// Package loopback decides where jisr may speak plaintext: only on a
// loopback interface. Every other link is mTLS (or TLS to an operator's
// collector), and the places that allow plaintext ask this package first.
package loopback

import (
	"net"
	"net/netip"
)

// Is reports whether a listen or dial address ("host:port" or a bare host)
// is on a loopback interface, or is "localhost".
func Is(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
