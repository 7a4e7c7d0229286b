// Package bustest starts a real federation bus for tests: an in-memory dev CA,
// SVIDs for every identity, and an embedded NATS server on 127.0.0.1 with
// exactly the configuration production renders (mTLS, verify_and_map,
// allow-list permissions, JetStream in a temporary directory). Start is for
// tests; Run, for Example functions, which get no testing.TB.
//
// Invariant: nothing here is a mock — tests talk real TLS to a real server.
package bustest
