// Package index follows the audit streams into a local SQLite store of
// every log's Merkle tree nodes and each log's latest verified checkpoint, so
// the gateway can prove to a citizen that a record about them is in the log,
// for any record of any gateway instance.
//
// Invariant: the index is derived data. It adopts a record only when it
// chains to the record before it and a checkpoint only when its signature
// verifies and its root equals the root the index recomputed; it never
// serves a proof it has not checked against that signed root. Deleting the
// database loses nothing: the index is rebuilt from the streams.
package index
