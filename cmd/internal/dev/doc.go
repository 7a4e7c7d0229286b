// Package dev is `jisr dev`: the whole federation in one process, started
// in dependency order (NATS and its streams, backends, the demo OpenID
// Provider, the gateway, the consent service, adapters) and stopped in
// reverse; the demo citizens, their ready consent tokens, var/demo.json
// and the printout.
//
// It lives under cmd/internal, like cmd/internal/bench, because only the
// jisr command runs it and because it wires every layer (bus, gateway,
// services) through cmd/internal/process: were it under gateway/ or
// services/, the import rules would have to let one layer import another.
package dev
