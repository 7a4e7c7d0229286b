// Package store opens a reference backend's embedded SQLite store (through
// modernc.org/sqlite, pure Go) and seeds it with the demo population.
//
// Invariant: a store is either fully seeded for its (schema version, seed,
// population) or replaced: seeding writes a temporary file and renames it
// into place, so a crash mid-seed never leaves a half-filled store behind.
package store
