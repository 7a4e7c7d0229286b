// Package node assembles one gateway replica as it runs in production: the
// gateway's query path ([gateway.Gateway]) with the consent verifier (its
// public keys watched on disk, revocations watched in NATS), the audit log
// with its index and the citizen's access log, the citizens' sign-in, and
// the HTTP and gRPC servers of the citizen-facing APIs.
//
// The caller (cmd/jisr) parses flags, reads the files they name, dials NATS
// and hands the connection, the SVID source and the sign-in to [New]; [Node.Start]
// brings the replica up and [Node.Stop] drains it.
package node
