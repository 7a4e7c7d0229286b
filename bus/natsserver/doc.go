// Package natsserver runs the federation's NATS server inside the process
// (nats-server/v2 as a library) for `jisr dev` and for tests.
//
// Invariant: the embedded server runs exactly the configuration natsconf
// renders — mTLS required, users mapped from SPIFFE IDs, allow-list
// permissions — with two additions: its own certificate and the client CA
// pool come from an SVID source at handshake time, so a rotated SVID or
// bundle takes effect without a restart; and a client's connection lasts no
// longer than its certificate: the user mapped from the SVID (the rendered
// user, permissions unchanged) carries the certificate's NotAfter as its
// ConnectionDeadline, so the server closes the connection when the SVID
// expires, and the reconnect with the expired certificate fails its handshake.
// When the trust bundle changes, every open client connection whose
// certificate chain no longer verifies against it (a CA removed) is closed
// within BundleSweepInterval.
package natsserver
