// Package demodata generates the demo federation's synthetic citizens.
//
// Invariant: every citizen is a pure function of (seed, index), so each
// ministry's backend seeds its own store independently and all of them
// agree — the same eIDs, households, deaths, incomes and insurance — without
// sharing a database. Citizens come in blocks of four (a household or a few
// people living alone); a population size is rounded up to a whole block.
package demodata
