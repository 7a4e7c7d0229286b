// Command jisr is the single binary of the jisr interoperability bus: each
// subcommand wires the modules into one part of the federation (NATS server,
// gateway, adapter, reference backend), or all of them at once (`jisr dev`),
// or is a tool for operators, auditors and citizens' consent.
package main
