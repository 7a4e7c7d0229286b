//go:build events

package main

// `make test-events`: the full count, ten thousand events published
// while the receiving backend is down, through a kill -9 of its adapter.
func init() { eventsTestCount = 10_000 }
